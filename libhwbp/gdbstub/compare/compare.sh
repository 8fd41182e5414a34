#!/usr/bin/env bash
# The stub against Linux: the same program (prog.S, the simulated task's
# bytes at the same addresses) and the same gdb session (../gdb/*.gdb),
# three ways:
#   native   gdb runs the static executable under ptrace (Linux's debug
#            registers),
#   gdbserver   gdb talks to Debian's gdbserver over the remote protocol,
#   stub     gdb talks to hwbp-gdbstub --sim,
# and every normalized transcript must equal ../gdb/expected.txt; the Z/z
# packets and their replies must be the same for gdbserver and the stub.
# Prints 'N passed, M failed'. Needs gcc, gdb, gdbserver
# (tests/install-deps.sh). Transcripts are kept in $OUT (default: a
# temporary directory, printed).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
passed=0
failed=0
check() { # name, then a command that succeeds when the check holds
    local name=$1
    shift
    if "$@"; then
        echo "ok: $name"
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        failed=$((failed + 1))
    fi
}

cargo build -q -p hwbp-gdbstub --manifest-path "$root/Cargo.toml" || exit 1
stub="${CARGO_TARGET_DIR:-$root/target}/debug/hwbp-gdbstub"

gcc -nostdlib -static -no-pie -Wl,-Ttext=0x401000,-Tdata=0x404000,--build-id=none -o "$out/prog" "$here/prog.S" || exit 1
strip "$out/prog"

same_bytes() { # section, the stub's line name
    objcopy -O binary -j "$1" "$out/prog" "$out/$2.bin"
    local native sim
    native=$(od -An -v -tx1 "$out/$2.bin" | tr -d ' \n')
    sim=$("$stub" --print-program | awk -v n="$2" '$1 == n { print $3 }')
    [[ -n $native && $native == "$sim" ]] || { echo "  $1: native $native, stub $sim"; return 1; }
}
check "prog.S assembles to the simulated task's code" same_bytes .text text
check "and to its data" same_bytes .data data

session() { # name, connect command(s) as gdb -ex arguments...
    local name=$1
    shift
    (cd "$here/../gdb" && timeout 120 gdb -batch -nx "$@" -x session.gdb -x session-after.gdb) >"$out/$name.txt" 2>&1
    (cd "$here/../gdb" && timeout 120 gdb -batch -nx -ex 'set debug remote 1' "$@" -x session.gdb -x session-after.gdb) >"$out/$name.remote.log" 2>&1
    # gdbserver on this machine warns on every register write-back that
    # one ptrace regset (not the general registers) cannot be stored; the
    # warning is gdbserver's, not gdb's, and is left out.
    grep -v '^Warning: ptrace(regsets_store_inferior_registers): Bad address$' "$out/$name.txt" |
        bash "$here/normalize.sh" >"$out/$name.normalized.txt"
}
same_as_expected() {
    diff -u "$here/../gdb/expected.txt" "$out/$1.normalized.txt" >"$out/$1.diff" || { cat "$out/$1.diff"; return 1; }
}
# The Z/z packets gdb sent, each with the reply (from set debug remote 1).
z_exchanges() {
    awk '
        { sub(/^ *\[remote\] */, "") }
        /^Sending packet: \$[Zz]/ { p = substr($3, 2); sub(/#..$/, "", p); pending = 1; next }
        pending && /^Packet received:/ { r = $0; sub(/^Packet received: ?/, "", r); print p " -> " (r == "" ? "(empty)" : r); pending = 0 }
    ' "$out/$1.remote.log"
}

session native -ex starti "$out/prog"
session gdbserver -ex "target remote | gdbserver - $out/prog"
session stub -ex "target remote | $stub --sim"

native_watch_works() { grep -q '^Old value = 0$' "$out/native.txt" || { echo "  no watchpoint stop natively: does this machine's ptrace reach the debug registers?"; return 1; }; }
check "native: hardware watchpoints trigger on this machine" native_watch_works
check "native: the transcript is gdb/expected.txt" same_as_expected native
check "gdbserver: the transcript is gdb/expected.txt" same_as_expected gdbserver
check "stub: the transcript is gdb/expected.txt" same_as_expected stub
z_exchanges gdbserver >"$out/gdbserver.z.txt"
z_exchanges stub >"$out/stub.z.txt"
same_z() {
    [[ -s $out/stub.z.txt ]] && diff -u "$out/gdbserver.z.txt" "$out/stub.z.txt"
}
check "stub: every Z/z packet answered as gdbserver answers it ($(wc -l <"$out/stub.z.txt") packets)" same_z

echo "transcripts: $out"
echo "$passed passed, $failed failed"
((failed == 0))
