#!/usr/bin/env bash
# Type-checks every crate that runs on Redox (hwbpd, libhwbp, the tools)
# for x86_64-unknown-redox, so no `cfg(target_os = "redox")` code path goes
# unchecked on a Linux CI machine.
#
# How: Debian's rustc-web (rustc/cargo 1.96, installed by
# tests/install-deps.sh) with its library source (rust-web-src), building
# std for the Redox target with -Zbuild-std. RUSTC_BOOTSTRAP=1 unlocks the
# nightly-only flags (and redox-scheme's `#![feature(linked_list_cursors)]`).
# The rustup nightly of rust-toolchain.toml has no Redox std and no
# rust-src, so it is not used here: RUSTC/RUSTDOC point at Debian's
# binaries explicitly (the rustup proxies on PATH would otherwise win).
#
# `cargo check` does not link, so relibc (which defines the `redox_*_v1`
# symbols libredox calls) is not needed. Nothing here runs Redox code.
#
# Options: REDOX_CHECK_TARGET (default x86_64-unknown-redox),
#          REDOX_CHECK_TARGET_DIR (default target/redox-check),
#          REDOX_CHECK_DENY_WARNINGS=1 to fail on warnings.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

target=${REDOX_CHECK_TARGET:-x86_64-unknown-redox}
target_dir=${REDOX_CHECK_TARGET_DIR:-$root/target/redox-check}
deb_cargo=/usr/bin/cargo
deb_rustc=/usr/bin/rustc
deb_rustdoc=/usr/bin/rustdoc
deb_src=/usr/lib/rustlib/src/rust/library

fail() {
    echo "redox-check: $*" >&2
    exit 1
}

# Prerequisites, with the fix in the message.
[[ -x $deb_cargo && -x $deb_rustc ]] ||
    fail "Debian's cargo/rustc not found at $deb_cargo / $deb_rustc (run tests/install-deps.sh: packages rustc-web, cargo-web)"
[[ -f $deb_src/Cargo.lock ]] ||
    fail "std source not found under $deb_src (run tests/install-deps.sh: package rust-web-src)"
"$deb_rustc" --print target-list | grep -qx "$target" ||
    fail "$deb_rustc does not know the target $target"

# The crates that run on Redox, by manifest. A crate that does not exist
# yet is skipped with a note (the tree is built by several people at once);
# one that exists is always checked.
manifests=(
    scheme-hwbp/Cargo.toml           # hwbpd: the scheme server
    scheme-hwbp/redox/Cargo.toml # hwbpd-redox: Redox backend, main loop, the hwbpd binary
    libhwbp/Cargo.toml     # the client library
    libhwbp/tools/Cargo.toml # `hwbp`, `hwbp-selftest`, `hwbp-target`; server crates are host-only deps (feature `sim`): never built here
    tests/redox-system/Cargo.toml # the system test's init, target and hwbp-bench
    libhwbp/gdbstub/Cargo.toml # hwbp-gdbstub: the protocol layers and the hwbp adapter (the simulated task is host-only)
)
packages=()
for m in "${manifests[@]}"; do
    if [[ ! -f $m ]]; then
        echo "redox-check: note: $m does not exist yet, skipped"
        continue
    fi
    name=$(sed -n '/^\[package\]/,/^\[/{s/^name *= *"\([^"]*\)".*/\1/p}' "$m" | head -n1)
    [[ -n $name ]] || fail "no package name in $m"
    packages+=(-p "$name")
done
((${#packages[@]})) || fail "no crate to check"

export RUSTC=$deb_rustc RUSTDOC=$deb_rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$target_dir
# Flags meant for the host toolchain must not leak into this build.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET RUSTUP_TOOLCHAIN
if [[ ${REDOX_CHECK_DENY_WARNINGS:-0} == 1 ]]; then
    export RUSTFLAGS="-D warnings"
fi

# The cookbook files (recipes, init service, config fragment) against the
# tree: cheap, and they describe how this code gets built on Redox.
bash cookbook/check-recipes.sh

echo "redox-check: $("$deb_cargo" --version), target $target: ${packages[*]}"
start=$SECONDS
# Default targets of each package: the library and every binary (the Redox
# main of hwbpd, the CLI, the selftest). Tests and benches are host-only.
"$deb_cargo" check \
    -Zbuild-std=std,panic_abort \
    --target "$target" \
    "${packages[@]}"
echo "redox-check: ok ($((SECONDS - start)) s)"
