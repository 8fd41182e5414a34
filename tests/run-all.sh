#!/usr/bin/env bash
# Every test of the project, in one command (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
