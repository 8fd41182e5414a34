#!/usr/bin/env bash
# Every test of the project, in one command (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh  # Debian packages: QEMU, rustc-web (+ library source); no-op when present
cargo test --workspace
bash tests/redox-check.sh  # hwbpd, libhwbp, tools type-check for x86_64-unknown-redox
bash kernel-patch/scripts/check-series.sh  # the kernel patch series carries kernel-patch/hwbp-kern unchanged
bash tests/qemu-testbed/run.sh --quiet  # hwbp-kern on QEMU-emulated debug registers (TCG); full log: tests/qemu-testbed/target/test.log
bash tests/redox-boot/ci.sh  # initfs packer, PVH loader, real-kernel selftest: host unit tests + bare-metal builds (booting needs a kernel: tests/redox-boot/run.sh KERNEL)
