#!/usr/bin/env bash
# Debian packages the tests need: QEMU for the testbed, Debian's rustc-web
# (rustc 1.96 + library source) for -Zbuild-std builds of bare-metal and
# x86_64-unknown-redox code, gdb for the gdb stub's session test, and
# gdbserver, gcc and binutils for its comparison with Linux
# (libhwbp/gdbstub/compare); python3 for tests/linux-compare/table.py.
# Idempotent; needs root (CI runs as root).
set -euo pipefail
pkgs=(qemu-system-x86 rustc-web cargo-web rust-web-src gdb gdbserver gcc binutils python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
