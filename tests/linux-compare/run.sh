#!/usr/bin/env bash
# Linux half of the hwbp/Linux comparison: boot Debian's linux-image-amd64
# under QEMU TCG with -icount shift=0,sleep=off and our static init
# (init.c), which measures Linux's perf breakpoint costs in guest
# instructions; then print the table (table.py).
#   run.sh [HWBP_FIGURES]     HWBP_FIGURES: "figure <key> <n>" lines (README),
#                             e.g. the serial log of tests/redox-system/run.sh --bench
# Env: LINUX_COMPARE_TIMEOUT (s, default 900), LINUX_COMPARE_SMP (default 1).
# Exit 0 only if every figure was produced and every guest check passed.
# Full serial log: target/serial.log.
set -euo pipefail
# HWBP_FIGURES as given on the caller's side of the cd below.
figures=()
if (($#)); then
    [[ -f $1 ]] || { echo "linux-compare: no file $1" >&2; exit 2; }
    figures=("$(realpath "$1")")
fi
cd "$(dirname "$0")"

# Debian packages (idempotent; root, as in CI).
pkgs=(qemu-system-x86 linux-image-amd64 gcc libc6-dev python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
kernel=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1)
[[ -n "$kernel" ]] || { echo "linux-compare: no /boot/vmlinuz-*-amd64" >&2; exit 1; }

mkdir -p target
gcc -static -O2 -Wall -Wextra -pthread -o target/init init.c
/usr/bin/python3 mkcpio.py target/initramfs.cpio target/init

# -smp 2 with -icount hangs this kernel at "Booting SMP configuration"
# (QEMU 7.2, single-threaded TCG); one vCPU by default.
smp=${LINUX_COMPARE_SMP:-1}
log=target/serial.log
rm -f "$log"
start=$(date +%s)
set +e
timeout -k 5 "${LINUX_COMPARE_TIMEOUT:-900}" qemu-system-x86_64 \
    -accel tcg -cpu max -m 1G -smp "$smp" -icount shift=0,sleep=off \
    -nographic -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$log" \
    -kernel "$kernel" -initrd target/initramfs.cpio \
    -append "console=ttyS0 panic=-1 edd=off loglevel=4" \
    </dev/null >target/qemu.out 2>&1
status=$?
set -e
echo "linux-compare: $(basename "$kernel"), -smp $smp, QEMU exit $status after $(( $(date +%s) - start )) s"
grep -E '^(info|calib|check|raw|figure|linux-compare:)' "$log" || true
# The guest's checks as the plain "N passed, M failed" line run-all.sh adds up.
echo "$(grep -c '^check .* ok ' "$log" || true) passed, $(grep -c '^check .* FAIL' "$log" || true) failed"
grep -E '^check .* FAIL' "$log" && { echo "linux-compare: guest checks FAILED; log: $PWD/$log" >&2; exit 1; }
grep -q '^linux-compare: done 0 failed checks' "$log" || { echo "linux-compare: guest did not finish (status $status); log: $PWD/$log" >&2; exit 1; }
/usr/bin/python3 table.py "$log" "${figures[@]}"
