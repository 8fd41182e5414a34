#!/usr/bin/env bash
# Normalize a gdb transcript of gdb/session*.gdb for comparison (the same
# rules as tests/gdb_session.rs): drop what precedes the first stop at the
# entry point (connection or start-up messages), and name the inferior
# alike at its exit (Linux gives a pid, a remote target says "Remote
# target").
awk '
    !started { if ($0 == "0x0000000000401000 in ?? ()") started = 1; next }
    { sub(/^\[Inferior 1 \((process [0-9]+|Remote target)\) exited normally\]$/, "[Inferior 1 (PROCESS) exited normally]"); print }
' "$@"
