#!/usr/bin/env bash
# Every test of the project, in one command (the README's test command).
# Each step's output is shown and kept; the last line adds up what every
# test runner reported, and any failing step stops the run with its status.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() {
    echo "== $*"
    "$@" 2>&1 | tee -a "$log"
}

step bash tests/install-deps.sh  # Debian packages: QEMU, rustc-web (+ library source); no-op when present
step cargo test --workspace
step bash tests/redox-check.sh  # hwbpd, libhwbp, tools type-check for x86_64-unknown-redox
step bash tests/abi-drift.sh --self-test  # the ABI-drift guard catches planted calls
step bash tests/abi-drift.sh  # no direct redox_syscall call newer than the pinned kernel
step bash kernel-patch/scripts/check-series.sh  # the kernel patch series carries kernel-patch/hwbp-kern unchanged
step bash tests/qemu-testbed/run.sh --quiet  # hwbp-kern on QEMU-emulated debug registers (TCG); full log: tests/qemu-testbed/target/test.log
step bash tests/redox-boot/ci.sh  # initfs packer, PVH loader, real-kernel selftest: host unit tests + bare-metal builds (booting needs a kernel: tests/redox-boot/run.sh KERNEL)
step bash libhwbp/gdbstub/compare/compare.sh  # the gdb stub: the scripted gdb session on the simulated task vs the same program under gdb and gdbserver on Linux
step bash tests/linux-compare/run.sh  # Linux perf breakpoint costs in guest instructions (TCG + icount); table in tests/linux-compare/README.md

# cargo's "test result: ok. N passed; M failed" and the testbed's
# "N passed, M failed" line.
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
    /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
    END { printf "run-all: %d passed, %d failed\n", p, f }
' "$log"
