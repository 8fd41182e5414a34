#!/usr/bin/env bash
# Build the PVH loader and the selftest (bare metal, Debian's rustc-web with
# -Zbuild-std) and the packer (host). Prints nothing but errors; the outputs
# are in $CARGO_TARGET_DIR (default: tests/redox-boot/target):
#   x86_64-unknown-none/release/redox-pvh-loader
#   x86_64-unknown-none/release/hwbp-redox-selftest
#   release/redox-boot-pack
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
bare=(--release --target x86_64-unknown-none
      -Zbuild-std=core,compiler_builtins -Zbuild-std-features=compiler-builtins-mem)
for crate in pvh-loader selftest; do
    (cd "$here/$crate" && RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build -q "${bare[@]}" --bins)
done
(cd "$here/packer" && cargo build -q --release)
