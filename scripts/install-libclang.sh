#!/usr/bin/env bash
# Installs libclang (the shared library that bindgen loads at run time) from PyPI into
# .libclang/ (git-ignored), for the C header drift test (ffi/tests/header_drift.rs), which
# runs this script itself when the library is missing. Prints the directory holding
# libclang.so. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.libclang
lib="$dest/clang/native/libclang.so"
if [ ! -f "$lib" ]; then
    echo "installing libclang==18.1.1 from PyPI into $dest" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" \
        libclang==18.1.1 >&2
fi
if [ ! -f "$lib" ]; then
    echo "error: $lib is missing after pip install libclang==18.1.1" >&2
    exit 1
fi
echo "$(pwd)/$dest/clang/native"
