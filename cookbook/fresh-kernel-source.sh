#!/usr/bin/env bash
# Remove the kernel-hwbp recipe's fetched source when the hwbp series
# changed since that source was patched.
#
#   cookbook/fresh-kernel-source.sh RECIPE_DIR HWBP_TREE
#
# Why: the cookbook re-fetches an existing git source with `git reset
# --hard` and a checkout, which keeps untracked files. The files the series
# created (hwbp/, src/hwbp.rs, src/hwbp/) stay behind, and re-applying a
# changed series fails ("The next patch would create the file ..., which
# already exists"). RECIPE_DIR/.hwbp-series records the hash of PINNED and
# the patches the source was made with; when it differs, source/,
# source.tmp/ and target/ go, so the cookbook fetches and patches anew.
set -euo pipefail
recipe=${1:?usage: fresh-kernel-source.sh RECIPE_DIR HWBP_TREE}
hwbp=${2:?usage: fresh-kernel-source.sh RECIPE_DIR HWBP_TREE}
hash="$(cat "$hwbp"/kernel-patch/PINNED "$hwbp"/kernel-patch/patches/*.patch | sha256sum | cut -d' ' -f1)"
if [[ -d $recipe/source && "$(cat "$recipe/.hwbp-series" 2> /dev/null)" != "$hash" ]]; then
    rm -rf "$recipe/source" "$recipe/source.tmp" "$recipe/target"
    echo "kernel-hwbp: the series changed since its source was patched: fetched and patched anew"
fi
mkdir -p "$recipe"
echo "$hash" > "$recipe/.hwbp-series"
