#!/usr/bin/env bash
# ABI-drift guard: no code of ours that runs on Redox through redox-scheme
# may call a redox_syscall function whose system call is newer than the
# pinned kernel (kernel-patch/PINNED).
#
# Why: redox-scheme 0.12 pulls redox_syscall 0.9.5, whose `openat_into`
# uses SYS_OPENAT_INTO2 and whose multi-fd `call_*` use MULTIPLE_FDS2; the
# pinned kernel (663e664, redox_syscall 0.9.2) has neither. hwbpd works
# because redox-scheme reaches the kernel through libredox and relibc, which
# speak the kernel's ABI; a direct `syscall::` call of those functions
# would compile and fail at run time, on Redox only.
#
#   tests/abi-drift.sh             check the workspace crates that run on Redox
#   tests/abi-drift.sh --self-test plant each forbidden call in a scratch copy
#                                  and check that the guard fails on it
#
# The first-process selftest (tests/redox-boot/selftest) is not checked: it
# pins redox_syscall 0.9.2, the kernel's own, and must use its `*_into`
# calls (there is no relibc under it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Crates that run on Redox with redox_syscall >= 0.9.5 in their graph.
dirs=(scheme-hwbp/src scheme-hwbp/redox/src libhwbp/src libhwbp/tools/src)
[[ -d tests/redox-system ]] && dirs+=(tests/redox-system)

# Functions, constants and flags that need a kernel newer than PINNED.
# Through the `syscall` crate only: libredox's `Fd::call_wo` and friends go
# through relibc, which speaks the pinned kernel's ABI.
calls='openat_into|call_ro|call_wo|call_rw|std_fs_call'
forbidden="(\\bsyscall::\\s*($calls)\\b|\\bSYS_OPENAT_INTO2\\b|\\bMULTIPLE_FDS2\\b|\\buse\\s+(redox_)?syscall::[^;]*\\b($calls)\\b)"

scan() {
    # Rust sources only; comments mentioning the names are fine.
    grep -rnE --include='*.rs' "$forbidden" "$@" 2>/dev/null | grep -vE '^[^:]+:[0-9]+:\s*//' || true
}

if [[ "${1:-}" == --self-test ]]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    for call in 'syscall::openat_into(fd, 3, "x", 0, 0)' 'syscall::call_ro(fd, &mut buf, flags, &[])' \
                'CallFlags::MULTIPLE_FDS2' 'syscall::SYS_OPENAT_INTO2' '{ use syscall::{dup_into, openat_into}; }'; do
        printf 'fn f() { let _ = %s; }\n' "$call" > "$scratch/planted.rs"
        if [[ -z "$(scan "$scratch")" ]]; then
            echo "abi-drift self-test: the guard missed: $call"
            exit 1
        fi
    done
    printf '// syscall::openat_into is not used here\nfn f(p: &Fd) { let _ = p.call_wo(&[], CallFlags::FD, &[]); }\n' > "$scratch/planted.rs"
    if [[ -n "$(scan "$scratch")" ]]; then
        echo "abi-drift self-test: a comment or a libredox call was flagged"
        exit 1
    fi
    echo "abi-drift self-test: 5 planted calls caught; comments and libredox calls pass"
    exit 0
fi

found=$(scan "${dirs[@]}")
if [[ -n "$found" ]]; then
    echo "abi-drift: calls the pinned kernel ($(cat kernel-patch/PINNED)) does not have:"
    echo "$found"
    echo "abi-drift: go through libredox/std instead (they speak the kernel's ABI via relibc)"
    exit 1
fi
versions=$(awk '/^name = "redox_syscall"/ { getline; print $3 }' Cargo.lock | tr -d '"' | sort -u | paste -sd, -)
echo "abi-drift: no direct redox_syscall call newer than the pinned kernel in ${#dirs[@]} crate dirs (redox_syscall in Cargo.lock: $versions)"
