#!/usr/bin/env bash
# Boot a Redox kernel under QEMU with the hwbp selftest as its first process.
#
#   tests/redox-boot/run.sh KERNEL [LOADER]
#
# KERNEL: the kernel ELF as the kernel's Makefile links it (kernel.all or
#         the stripped `kernel`), from the user's own build tree.
# LOADER: our PVH loader (default: built here by build.sh). The upstream
#         bootloader is not used: see README.md.
#
# Packs the selftest into an initfs, bundles it with the kernel, boots
# `qemu-system-x86_64 -machine q35 -smp 2 -cpu max -accel tcg` headless,
# prints the serial log, and exits 0 only on `hwbp-selftest: N passed,
# 0 failed` (N > 0). No verdict within $TIMEOUT seconds (default 300): 124.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernel="${1:?usage: run.sh KERNEL [LOADER]}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
"$here/build.sh"
loader="${2:-$CARGO_TARGET_DIR/x86_64-unknown-none/release/redox-pvh-loader}"
pack="$CARGO_TARGET_DIR/release/redox-boot-pack"
selftest="$CARGO_TARGET_DIR/x86_64-unknown-none/release/hwbp-redox-selftest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$pack" initfs "$selftest" "$work/initfs.img"
"$pack" bundle "$kernel" "$work/initfs.img" "$work/bundle.bin"
log="${SERIAL_LOG:-$work/serial.log}"
: > "$log"
# Kernel addresses the selftest's attack checks aim at (breakpoints the
# kernel must refuse), from the kernel's symbol table: passed on the QEMU
# command line, which the loader hands to the selftest as `sys:env`
# variables. A kernel without the symbols (unpatched) gets none, and those
# checks fail with "no address".
nm "$kernel" > "$work/kernel.syms" 2>/dev/null || true
symbol() { awk -v pat="$1" '$3 ~ pat && !found { print $1; found = 1 }' "$work/kernel.syms"; }
append=""
for pair in "SYSCALL_ENTRY:19syscall_instruction$" "DEBUG_ENTRY:15debug_with_hwbp$" \
            "NMI_ENTRY:12non_maskable$" "DEBUG_STACK:20INIT_BSP_DEBUG_STACK" \
            "HWBP_TEXT:^__hwbp_text_start$" "BSP_PCR:7BSP_PCR" "BSP_IDT:12INIT_BSP_IDT" \
            "BACKUP_STACK:21INIT_BSP_BACKUP_STACK" "READINESS:17READINESS_PENDING" \
            "KFUNC_LSEEK:7syscall2fs5lseek$" "KVAR_NEXT_ID:6scheme4proc7NEXT_ID"; do
    addr="$(symbol "${pair#*:}")"
    [[ -n "$addr" ]] && append+="HWBP_SYM_${pair%%:*}=$addr "
done
# The kernel watch check's expected instruction pointers: a data watch is a
# trap, so a record's rip is the instruction after each write to proc's
# NEXT_ID (the address of the line that follows each one in the listing).
i=0
while read -r ip; do
    append+="HWBP_SYM_KVAR_NEXT_ID_IP$i=$ip "
    i=$((i + 1))
done < <(objdump -d --no-show-raw-insn "$kernel" 2>/dev/null \
         | awk 'after { sub(/:$/, "", $1); print $1; after = 0 }
                /6scheme4proc7NEXT_ID/ && !/^[0-9a-f]+ </ { after = 1 }' | head -n 8)
qemu=(qemu-system-x86_64 -machine q35 -smp 2 -cpu max -accel tcg -m 1G
      -display none -monitor none -serial "file:$log" -no-reboot
      -kernel "$loader" -initrd "$work/bundle.bin" -append "${append% }")
echo "run.sh: ${qemu[*]}"
timeout="${TIMEOUT:-300}"
"${qemu[@]}" &
qpid=$!
verdict=""
for ((i = 0; i < timeout * 10; i++)); do
    verdict="$(grep -a -o 'hwbp-selftest: [0-9]* passed, [0-9]* failed' "$log" | tail -n 1 || true)"
    if [[ -n "$verdict" ]] || ! kill -0 "$qpid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
# The selftest powers off after its verdict; give it a moment, then stop QEMU.
for ((i = 0; i < 50 && ${#verdict} > 0; i++)); do
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.1
done
exited=0
kill -0 "$qpid" 2>/dev/null || exited=1
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
tr -d '\r' < "$log" | grep -av '^Shutdown with outb' || true
if [[ -z "$verdict" ]]; then
    if ((exited)); then
        echo "run.sh: QEMU stopped without a verdict (crash, or the kernel powered off early)"
    else
        echo "run.sh: no verdict within ${timeout}s (hang)"
    fi
    exit 124
fi
echo "run.sh: $verdict"
if [[ "$verdict" =~ ^hwbp-selftest:\ ([0-9]+)\ passed,\ 0\ failed$ ]] && ((BASH_REMATCH[1] > 0)); then
    exit 0
fi
exit 1
