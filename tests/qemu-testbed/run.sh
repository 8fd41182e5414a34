#!/usr/bin/env bash
# Build the testbed kernel and boot it under QEMU (TCG); exit 0 only when
# the kernel reports every check passed. `run.sh --bench` runs bench mode.
set -euo pipefail
cd "$(dirname "$0")"
mode=test
features=()
qemu_extra=()
if [[ "${1:-}" == "--bench" ]]; then
    mode=bench
    features=(--features bench)
    # rdtsc counts guest instructions: deterministic path lengths.
    qemu_extra=(-icount shift=0,sleep=off)
fi
export RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR="$PWD/target"
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS
/usr/bin/cargo build --release --locked -q "${features[@]}"
kernel="$CARGO_TARGET_DIR/x86_64-unknown-none/release/hwbp-qemu-testbed"
log="$CARGO_TARGET_DIR/$mode.log"
set +e
timeout --foreground -k 5 120 qemu-system-x86_64 \
    -machine microvm -accel tcg -cpu qemu64 -m 64M \
    -nodefaults -no-user-config -display none -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    "${qemu_extra[@]}" -kernel "$kernel" | tee "$log"
status=${PIPESTATUS[0]}
set -e
case "$mode:$status" in
    test:33) echo "qemu-testbed: all checks passed"; exit 0 ;;
    test:35) echo "qemu-testbed: checks FAILED" >&2; exit 1 ;;
    bench:39) exit 0 ;;
    *:124|*:137) echo "qemu-testbed: TIMEOUT" >&2; exit 1 ;;
    *) echo "qemu-testbed: kernel crashed or QEMU failed (status $status)" >&2; exit 1 ;;
esac
