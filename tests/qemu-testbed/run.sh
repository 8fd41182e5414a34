#!/usr/bin/env bash
# Build the hwbp QEMU testbed kernel and boot it under QEMU (TCG).
#   run.sh            run the checks, print every line; exit 0 only when the
#                     kernel reports "N passed, 0 failed"
#   run.sh --quiet    the same, printing only FAIL lines and the verdict
#   run.sh --bench    bench mode (-icount: rdtsc counts guest instructions)
# The full output goes to target/test.log (target/bench.log).
set -euo pipefail
cd "$(dirname "$0")"
mode=test quiet=0
features=() qemu_extra=()
case "${1:-}" in
    --bench) mode=bench features=(--features bench) qemu_extra=(-icount shift=0,sleep=off) ;;
    --quiet) quiet=1 ;;
    "") ;;
    *) echo "usage: $0 [--quiet|--bench]" >&2; exit 2 ;;
esac

# Debian's rustc-web with -Zbuild-std; not rustup's toolchain.
export RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR="$PWD/target"
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTUP_TOOLCHAIN
/usr/bin/cargo build --release -q "${features[@]}"
kernel="$CARGO_TARGET_DIR/x86_64-unknown-none/release/hwbp-qemu-testbed"
log="$CARGO_TARGET_DIR/$mode.log"

# Under KVM data watchpoints never fire on this machine: TCG only.
set +e
timeout -k 5 60 qemu-system-x86_64 \
    -machine microvm -accel tcg -cpu qemu64 -m 64M \
    -nodefaults -no-user-config -display none -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    "${qemu_extra[@]}" -kernel "$kernel" </dev/null >"$log" 2>&1
status=$?
set -e
if ((quiet)); then
    grep -E '^(FAIL|PANIC|FATAL)' "$log" || true
    grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" || true
else
    cat "$log"
fi

# isa-debug-exit: status = (code << 1) | 1, codes in src/serial.rs.
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
case "$mode:$status" in
    test:33)
        if [[ "$summary" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
            echo "qemu-testbed: all checks passed ($summary)"
            exit 0
        fi
        echo "qemu-testbed: exit status and summary disagree ('$summary')" >&2; exit 1 ;;
    test:35) echo "qemu-testbed: checks FAILED ($summary); log: $log" >&2; exit 1 ;;
    bench:39) exit 0 ;;
    *:124|*:137) echo "qemu-testbed: TIMEOUT; log: $log" >&2; exit 1 ;;
    *) echo "qemu-testbed: kernel crashed or QEMU failed (status $status); log: $log" >&2; exit 1 ;;
esac
