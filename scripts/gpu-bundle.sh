#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), what the GPU check runs on the GPU machine, which
# has CUDA, nvcc and PyTorch but no Rust toolchain and no network (DESIGN.md, "The GPU
# machine"). Output: target/gpu-bundle/ (git-ignored, carried with carry ["target/gpu-bundle"]),
# the binaries packed into binaries.tar.xz (scripts/gpu-bundle-unpack.sh unpacks them there):
#   kiln               the CLI, release, --features cuda, stripped
#   ops_equivalence    tests/ops_equivalence.rs (CPU vs CUDA), if that test exists
#   cuda_llama         tests/cuda_llama.rs (tiny Llama models on CUDA vs transformers)
#   cuda_bert          tests/cuda_bert.rs (BERT embeddings on CUDA vs the CPU)
#   kiln_kernels-lib   kiln-kernels' unit tests (--features cuda)
#   kiln_engine-lib    kiln-engine's unit tests (--features cuda)
#   gpu-check.sh gpu_ceilings.py gpu_peers.py   the check itself
#   MANIFEST.txt       commit, date, toolchain, size and sha256 of every file
# No fixtures travel in the bundle: the check needs none (its inputs are random), and the
# working tree, tests/fixtures included, travels anyway.
# Fails when the CUDA build fails, and when the bundle is over KILN_BUNDLE_MAX_MIB (48).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
dest="${root}/target/gpu-bundle"
logs="${root}/target/gpu-bundle-logs"
max_mib="${KILN_BUNDLE_MAX_MIB:-48}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "== CUDA toolchain (scripts/install-cuda-toolchain.sh)"
if ! nvcc_path="$(scripts/install-cuda-toolchain.sh)"; then
    echo "error: the CUDA toolchain could not be installed; the bundle needs nvcc to compile" >&2
    echo "       the kernels (set NVCC or CUDA_HOME to use an installed toolkit)" >&2
    exit 1
fi
echo "nvcc: ${nvcc_path}"

# cargo's JSON messages -> the executable of the artifact named $1 whose kind is $2
# (test binaries are compiler artifacts with profile.test = true).
executable_of() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
name, kind, messages = sys.argv[1], sys.argv[2], sys.argv[3]
found = ""
for line in open(messages):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == name and kind in t["kind"] and m["profile"]["test"]:
        found = m["executable"]
print(found)
EOF
}

build_failed() { # what log [json messages]
    echo "error: $1 failed with --features cuda. The compiler said:" >&2
    if [[ -n "${3:-}" && -s "$3" ]]; then
        python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-message" and m["message"]["level"] == "error":
        sys.stdout.write(m["message"]["rendered"])
' "$3" | head -n 60 >&2
    fi
    grep -E '^error' -A 12 "$2" | head -n 40 >&2 || true
    mkdir -p "${logs}"
    cp "$2" ${3:+"$3"} "${logs}/" 2>/dev/null || true
    echo "(logs kept in ${logs}; does the engine's CUDA backend compile yet? try" >&2
    echo "  cargo build --release --features cuda; cargo test --release --features cuda --no-run)" >&2
    exit 1
}

echo "== cargo build --release --features cuda --bin kiln"
if ! cargo build --release --features cuda --bin kiln 2>&1 | tee "${work}/build.log"; then
    build_failed "cargo build (kiln)" "${work}/build.log"
fi

declare -A tests=()
if [[ -f tests/ops_equivalence.rs ]]; then
    echo "== cargo test --release --features cuda --no-run --test ops_equivalence"
    cargo test --release --features cuda --no-run --message-format=json -p kiln \
        --test ops_equivalence >"${work}/eq.json" 2>"${work}/eq.log" \
        || build_failed "building tests/ops_equivalence.rs" "${work}/eq.log" "${work}/eq.json"
    tests[ops_equivalence]="$(executable_of ops_equivalence test "${work}/eq.json")"
else
    echo "warning: tests/ops_equivalence.rs does not exist yet: the bundle has no equivalence suite" >&2
fi
echo "== cargo test --release --features cuda --no-run --test cuda_llama"
cargo test --release --features cuda --no-run --message-format=json -p kiln \
    --test cuda_llama >"${work}/cl.json" 2>"${work}/cl.log" \
    || build_failed "building tests/cuda_llama.rs" "${work}/cl.log" "${work}/cl.json"
tests[cuda_llama]="$(executable_of cuda_llama test "${work}/cl.json")"
echo "== cargo test --release --features cuda --no-run --test cuda_bert"
cargo test --release --features cuda --no-run --message-format=json -p kiln \
    --test cuda_bert >"${work}/cb.json" 2>"${work}/cb.log" \
    || build_failed "building tests/cuda_bert.rs" "${work}/cb.log" "${work}/cb.json"
tests[cuda_bert]="$(executable_of cuda_bert test "${work}/cb.json")"
for crate in kiln-kernels kiln-engine; do
    lib="${crate//-/_}"
    echo "== cargo test --release --features cuda --no-run -p ${crate} --lib"
    cargo test --release --no-run --message-format=json -p "${crate}" --features cuda --lib \
        >"${work}/${lib}.json" 2>"${work}/${lib}.log" \
        || build_failed "building ${crate}'s unit tests" "${work}/${lib}.log" "${work}/${lib}.json"
    tests["${crate#kiln-}"]="$(executable_of "${lib}" lib "${work}/${lib}.json")"
done

echo "== assembling ${dest}"
rm -rf "${dest}"
mkdir -p "${dest}"
strip_into() { # source name
    if [[ -z "$1" || ! -f "$1" ]]; then
        echo "error: no executable found for $2 in cargo's output" >&2
        exit 1
    fi
    strip --strip-all -o "${dest}/$2" "$1"
    chmod +x "${dest}/$2"
}
strip_into target/release/kiln kiln
[[ -n "${tests[ops_equivalence]:-}" || ! -f tests/ops_equivalence.rs ]] \
    || { echo "error: cargo built no ops_equivalence executable" >&2; exit 1; }
[[ -n "${tests[ops_equivalence]:-}" ]] && strip_into "${tests[ops_equivalence]}" ops_equivalence
[[ -n "${tests[cuda_llama]:-}" ]] && strip_into "${tests[cuda_llama]}" cuda_llama
[[ -n "${tests[cuda_bert]:-}" ]] && strip_into "${tests[cuda_bert]}" cuda_bert
strip_into "${tests[kernels]}" kiln_kernels-lib
strip_into "${tests[engine]}" kiln_engine-lib
# The newest glibc symbol version the binaries need: the GPU machine's glibc must be as new.
glibc="$(objdump -T "${dest}/kiln" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)"
cp scripts/gpu-check.sh scripts/gpu_ceilings.py scripts/gpu_peers.py "${dest}/"

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain 2>/dev/null | grep -vc '^??' || true)"
{
    echo "commit ${commit}$([[ "${dirty}" != 0 ]] && echo " (+${dirty} uncommitted changes)")"
    echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "built-on $(uname -m) $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}"), needs ${glibc:-glibc ?}"
    echo "rustc $(rustc --version | cut -d' ' -f2-)"
    echo "nvcc $("${nvcc_path}" --version | grep -o 'release [0-9.]*' || echo '?')"
    echo "features cuda; kernels: SASS sm_80 sm_89 sm_90a, PTX compute_80"
    echo "binaries packed into binaries.tar.xz; scripts/gpu-bundle-unpack.sh unpacks them"
    echo "files (bytes sha256 name):"
    (cd "${dest}" && for f in *; do
        [[ "$f" == MANIFEST.txt ]] && continue
        printf '  %10d %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-64)" "$f"
    done)
} >"${dest}/MANIFEST.txt"

# Every binary embeds the same kernel fatbins (several MiB): one solid xz archive (its 64 MiB
# dictionary spans the copies) holds them at about a tenth of their size. The scripts run on
# the GPU machine unpack it with scripts/gpu-bundle-unpack.sh (python3's tarfile).
echo "== packing the binaries into ${dest}/binaries.tar.xz (xz -9)"
bins=()
for f in kiln ops_equivalence cuda_llama cuda_bert kiln_kernels-lib kiln_engine-lib; do
    [[ -f "${dest}/${f}" ]] && bins+=("${f}")
done
tar -C "${dest}" -cf - "${bins[@]}" | xz -9 -T1 >"${dest}/binaries.tar.xz"
(cd "${dest}" && rm -f "${bins[@]}")
cp scripts/gpu-bundle-unpack.sh "${dest}/"

bytes="$(du -sb "${dest}" | cut -f1)"
mib="$(awk -v b="${bytes}" 'BEGIN { printf "%.1f", b / 1048576 }')"
cat "${dest}/MANIFEST.txt"
if ((bytes > max_mib * 1048576)); then
    echo "error: the bundle is ${mib} MiB, over the ${max_mib} MiB limit (the working tree" >&2
    echo "       and the bundle travel together under 64 MiB)" >&2
    exit 1
fi
echo "bundle: ${dest} ${mib} MiB (limit ${max_mib} MiB)"
echo "run on the GPU machine, from the repository root: scripts/gpu-check.sh \"\$OUT\""
echo "  (device tool: carry [\"target/gpu-bundle\"])"
