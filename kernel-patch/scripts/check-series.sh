#!/usr/bin/env bash
# Fails when the series' copy of the hwbp-kern crate differs from
# kernel-patch/hwbp-kern: regenerates the crate-import patch into a temporary
# directory and compares it with the committed one. Needs no upstream kernel.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
name="0001-hwbp-import-the-hwbp-kern-crate.patch"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$here/scripts/regen-series.sh" "$tmp" > /dev/null
if ! diff -u "$here/patches/$name" "$tmp/$name" > "$tmp/diff"; then
    echo "check-series: patches/$name is stale: kernel-patch/hwbp-kern changed." >&2
    echo "check-series: run kernel-patch/scripts/regen-series.sh and commit the result." >&2
    head -n 40 "$tmp/diff" >&2
    exit 1
fi

# Every other patch of the series must be a format-patch file that leaves the
# crate alone (hooks only), so the crate has exactly one source of truth.
for p in "$here"/patches/*.patch; do
    [ "$(basename "$p")" = "$name" ] && continue
    if grep -q '^+++ b/hwbp/' "$p"; then
        echo "check-series: $(basename "$p") edits hwbp/ (the generated crate copy)" >&2
        exit 1
    fi
    if ! head -n 1 "$p" | grep -q '^From [0-9a-f]\{40\} '; then
        echo "check-series: $(basename "$p") is not a git format-patch file" >&2
        exit 1
    fi
done
echo "check-series: the series carries kernel-patch/hwbp-kern unchanged"
