#!/usr/bin/env bash
# Prints the folder that holds the GPU bundle's binaries, for the scripts that run on the GPU
# machine: BUNDLE itself when they are there (an unpacked bundle), else a scratch folder into
# which BUNDLE/binaries.tar.xz (scripts/gpu-bundle.sh packs them: they all embed the same
# kernel fatbins, so one solid xz archive is about a tenth of their size) is unpacked once,
# with python3's tarfile (no xz program needed there). MANIFEST.txt comes along.
#
#   B="$(scripts/gpu-bundle-unpack.sh target/gpu-bundle)" || exit 1
set -euo pipefail
src="${1:?usage: scripts/gpu-bundle-unpack.sh BUNDLE}"
if [[ -x "${src}/kiln" || ! -f "${src}/binaries.tar.xz" ]]; then
    echo "${src}"
    exit 0
fi
dir="${TMPDIR:-/tmp}/kiln-gpu-bundle-$(sha256sum "${src}/binaries.tar.xz" | cut -c1-16)"
if [[ ! -x "${dir}/kiln" ]]; then
    rm -rf "${dir}.part"
    mkdir -p "${dir}.part"
    python3 - "${src}/binaries.tar.xz" "${dir}.part" <<'PY' >&2
import sys, tarfile
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **kw)
PY
    cp "${src}/MANIFEST.txt" "${dir}.part/" 2>/dev/null || true
    rm -rf "${dir}"
    mv "${dir}.part" "${dir}"
fi
echo "${dir}"
