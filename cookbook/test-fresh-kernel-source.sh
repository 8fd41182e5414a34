#!/usr/bin/env bash
# Host test of fresh-kernel-source.sh (run by tests/run-all.sh through
# check-recipes.sh): a source patched with another series is removed, one
# patched with this series is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "test-fresh-kernel-source: $*" >&2; exit 1; }
mkdir -p "$t/r/source/hwbp" "$t/r/target"
echo old > "$t/r/.hwbp-series"
bash "$here/fresh-kernel-source.sh" "$t/r" "$here/.." > /dev/null
[[ ! -e $t/r/source && ! -e $t/r/target ]] || fail "a source patched with another series was kept"
mkdir -p "$t/r/source/hwbp"
bash "$here/fresh-kernel-source.sh" "$t/r" "$here/.." > /dev/null
[[ -d $t/r/source/hwbp ]] || fail "a source patched with this series was removed"
rm -f "$t/r/.hwbp-series"
bash "$here/fresh-kernel-source.sh" "$t/r" "$here/.." > /dev/null
[[ ! -e $t/r/source ]] || fail "a source of unknown series was kept"
echo "test-fresh-kernel-source: 3 passed, 0 failed"
