#!/usr/bin/env bash
# CI part of redox-boot (no kernel is booted: no upstream code here):
# host unit tests of the format, the packer and the selftest's logic, and
# bare-metal builds of the PVH loader and the selftest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
for crate in format packer; do
    (cd "$here/$crate" && cargo test -q)
done
(cd "$here/selftest" && cargo test -q --lib)
"$here/build.sh"
