#!/usr/bin/env bash
# CPU throughput of kiln next to its peers, in one run, on this machine, with the same
# thread count, the same GGUF (SmolLM2-135M-Instruct Q4_1) and the same workload:
#
#   kiln          target/release/kiln bench (weights dequantised to bf16 by default)
#   transformers  PyTorch CPU, the GGUF dequantised to bf16 and to f32
#                 (scripts/bench_peers_hf.py, in the fixtures venv, one process per dtype)
#   llama.cpp     node-llama-cpp@3.22.1's prebuilt CPU build, Q4_1 as stored
#                 (scripts/bench_peers_llamacpp.mjs, installed into <repo>/.bench-peers)
#
# Workload for every engine: a prompt of N pseudo-random ids
# (id_i = (i * 2654435761 + 12345) mod vocab, as `kiln bench` uses), one forward over the
# prompt that picks the next token greedily (prefill), then M one-token forwards, each
# picking the next token greedily (decode). prefill tok/s = N / prefill time,
# decode tok/s = M / decode time. One warm-up, best of --repeat timed runs. Peak RSS is each
# engine process's own high-water mark (VmHWM / ru_maxrss), a fresh process per engine.
#
# Usage: scripts/bench-cpu-peers.sh [--prompt-len N] [--gen-len M] [--threads T]
#            [--repeat R] [--out FILE] [--engines LIST] [--kiln-dtypes LIST] [--no-build]
#   --prompt-len N     prompt tokens (default 128)
#   --gen-len M        generated tokens (default 64)
#   --threads T        threads for every engine (default 2)
#   --repeat R         timed repetitions, best reported (default 3)
#   --out FILE         JSON results (default target/bench-peers.json)
#   --engines LIST     comma list of kiln,hf-bf16,hf-f32,llamacpp (default: all)
#   --kiln-dtypes LIST comma list of kiln --dtype values, "native" = the GGUF's own formats
#                      (default native,bf16); the first is the
#                      one the ratio columns use
#   --no-build         skip `cargo build --release` (use the existing target/release/kiln)
#
# Prerequisites: scripts/fetch-models.sh (the GGUF), scripts/setup-fixtures-venv.sh (the
# Python venv), node + npm (node-llama-cpp is installed on first use; needs the npm registry
# once), cargo.
set -euo pipefail

repo_root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "${repo_root}"

prompt_len=128
gen_len=64
threads=2
repeat=3
out="target/bench-peers.json"
engines="kiln,hf-bf16,hf-f32,llamacpp"
kiln_dtypes="native,bf16"
build=1

NLC_VERSION="3.22.1"
model_name="@hf/huggingfacetb/smollm2-135m-instruct"
kiln_home="${KILN_HOME:-${HOME}/.cache/kiln}"
gguf="${kiln_home}/models/${model_name}/SmolLM2-135M-Instruct.Q4_1.gguf"
venv_python="${repo_root}/.venv-fixtures/bin/python"
peers_dir="${repo_root}/.bench-peers"

log() { printf 'bench-cpu-peers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit "${1:-0}"; }

positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prompt-len) positive_int "$1" "${2:-}"; prompt_len="$2"; shift 2 ;;
        --gen-len) positive_int "$1" "${2:-}"; gen_len="$2"; shift 2 ;;
        --threads) positive_int "$1" "${2:-}"; threads="$2"; shift 2 ;;
        --repeat) positive_int "$1" "${2:-}"; repeat="$2"; shift 2 ;;
        --out) [[ -n "${2:-}" ]] || die "--out needs a file"; out="$2"; shift 2 ;;
        --engines) [[ -n "${2:-}" ]] || die "--engines needs a list"; engines="$2"; shift 2 ;;
        --kiln-dtypes) [[ -n "${2:-}" ]] || die "--kiln-dtypes needs a list"; kiln_dtypes="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage 0 ;;
        *) log "unknown argument: $1"; usage 2 ;;
    esac
done

want() { [[ ",${engines}," == *",$1,"* ]]; }
for e in ${engines//,/ }; do
    case "${e}" in kiln|hf-bf16|hf-f32|llamacpp) ;; *) die "unknown engine '${e}' in --engines (kiln,hf-bf16,hf-f32,llamacpp)" ;; esac
done
for d in ${kiln_dtypes//,/ }; do
    case "${d}" in native|bf16|f32|f16) ;; *) die "unknown kiln dtype '${d}' (native,bf16,f32,f16)" ;; esac
done

# ---- prerequisites ---------------------------------------------------------------------
[[ -f "${gguf}" ]] || die "model not found: ${gguf}
    install it with scripts/fetch-models.sh (KILN_HOME=${kiln_home})"
command -v python3 >/dev/null || die "python3 not found (needed to assemble the results)"
if want kiln; then
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
fi
if want hf-bf16 || want hf-f32; then
    [[ -x "${venv_python}" ]] || die "Python venv not found: ${venv_python}
    create it with scripts/setup-fixtures-venv.sh"
    "${venv_python}" -c 'import torch, transformers, gguf' 2>/dev/null \
        || die "the venv ${venv_python%/bin/python} lacks torch / transformers / gguf
    (re)create it with scripts/setup-fixtures-venv.sh"
fi
if want llamacpp; then
    command -v node >/dev/null || die "node not found: install Node.js >= 20 (with npm)"
    installed="$(node -p "try { require('${peers_dir}/node_modules/node-llama-cpp/package.json').version } catch { '' }" 2>/dev/null || true)"
    prebuilt="${peers_dir}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node"
    if [[ "${installed}" != "${NLC_VERSION}" || ! -f "${prebuilt}" ]]; then
        command -v npm >/dev/null || die "npm not found: install Node.js >= 20 (with npm)"
        log "installing node-llama-cpp@${NLC_VERSION} + @node-llama-cpp/linux-x64 into ${peers_dir}"
        mkdir -p "${peers_dir}"
        [[ -f "${peers_dir}/package.json" ]] \
            || printf '{\n  "name": "kiln-bench-peers",\n  "private": true\n}\n' > "${peers_dir}/package.json"
        # --ignore-scripts: no postinstall download/build; --omit=optional: only the CPU
        # prebuilt named here, not the CUDA/Vulkan variants.
        (cd "${peers_dir}" && npm install --no-audit --no-fund --ignore-scripts --omit=optional \
            --save-exact "node-llama-cpp@${NLC_VERSION}" "@node-llama-cpp/linux-x64@${NLC_VERSION}" >&2) \
            || die "npm install of node-llama-cpp@${NLC_VERSION} failed (it needs the npm registry once; offline?)"
        [[ -f "${prebuilt}" ]] || die "the prebuilt llama.cpp addon is missing after npm install: ${prebuilt}"
    fi
fi

# ---- build ------------------------------------------------------------------------------
kiln_bin="${repo_root}/target/release/kiln"
if want kiln; then
    if [[ "${build}" == 1 ]]; then
        log "cargo build --release --bin kiln"
        cargo build --release --bin kiln >&2 || die "cargo build --release failed"
    fi
    [[ -x "${kiln_bin}" ]] || die "${kiln_bin} not found (run without --no-build)"
fi

# ---- run --------------------------------------------------------------------------------
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
results="${scratch}/results.jsonl"
: > "${results}"

export RAYON_NUM_THREADS="${threads}" OMP_NUM_THREADS="${threads}" MKL_NUM_THREADS="${threads}"

# A tiny process monitor: runs CMD with stdout/stderr to files and prints
# {"wall_s", "engine_cpu_s", "other_cpu_cores"}: other_cpu_cores is the average number of
# cores that processes other than the engine kept busy during its run (from /proc/stat),
# i.e. how much the measurement was disturbed by the rest of the machine.
cat > "${scratch}/monitor.py" <<'PY'
import json, os, subprocess, sys, time

def busy_idle():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle, idle

out_path, err_path, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
tick = os.sysconf("SC_CLK_TCK")
b0, _ = busy_idle()
c0 = os.times()
t0 = time.monotonic()
with open(out_path, "w") as out, open(err_path, "w") as err:
    rc = subprocess.call(cmd, stdout=out, stderr=err)
wall = time.monotonic() - t0
c1 = os.times()
b1, _ = busy_idle()
engine_cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
others = max(0.0, (b1 - b0) / tick - engine_cpu) / wall if wall > 0 else 0.0
print(json.dumps({"rc": rc, "wall_s": wall, "engine_cpu_s": engine_cpu, "other_cpu_cores": others}))
PY

# run_engine LABEL CMD...: runs CMD under the monitor, keeps the last JSON line of its
# stdout, tagged with LABEL, the command and the monitor's numbers.
run_engine() {
    local label="$1"; shift
    local mon line
    log "running ${label}"
    mon="$(python3 "${scratch}/monitor.py" "${scratch}/stdout" "${scratch}/stderr" "$@")"
    if [[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rc"])' "${mon}")" != 0 ]]; then
        tail -n 20 "${scratch}/stderr" >&2
        die "${label} failed: $*"
    fi
    line="$(grep '^{' "${scratch}/stdout" | tail -n 1 || true)"
    [[ -n "${line}" ]] || { cat "${scratch}/stdout" "${scratch}/stderr" >&2; die "${label} printed no JSON line"; }
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
m = json.loads(sys.argv[2])
r["label"] = sys.argv[3]
r["command"] = sys.argv[4]
r["process_wall_s"] = m["wall_s"]
r["process_cpu_s"] = m["engine_cpu_s"]
r["other_cpu_cores"] = m["other_cpu_cores"]
print(json.dumps(r))' "${line}" "${mon}" "${label}" "$*" >> "${results}"
}

if want kiln; then
    for d in ${kiln_dtypes//,/ }; do
        # "native" keeps the GGUF's own formats (Q4_1/Q8_0 blocks multiplied directly).
        dtype_flag=()
        [[ "${d}" == native ]] || dtype_flag=(--dtype "${d}")
        run_engine "kiln ${d}" "${kiln_bin}" bench "${model_name}" --prompt-len "${prompt_len}" \
            --gen-len "${gen_len}" --repeat "${repeat}" "${dtype_flag[@]}" --json
    done
fi
for d in bf16 f32; do
    if want "hf-${d}"; then
        run_engine "transformers ${d}" "${venv_python}" scripts/bench_peers_hf.py --gguf "${gguf}" \
            --dtype "${d}" --prompt-len "${prompt_len}" --gen-len "${gen_len}" \
            --threads "${threads}" --repeat "${repeat}"
    fi
done
if want llamacpp; then
    run_engine "llama.cpp Q4_1" node scripts/bench_peers_llamacpp.mjs --modules "${peers_dir}" \
        --gguf "${gguf}" --prompt-len "${prompt_len}" --gen-len "${gen_len}" \
        --threads "${threads}" --repeat "${repeat}"
fi

# ---- report -----------------------------------------------------------------------------
mkdir -p "$(dirname "${out}")"
python3 - "${results}" "${out}" "${threads}" "${prompt_len}" "${gen_len}" "${repeat}" <<'PY'
import datetime, json, os, platform, subprocess, sys

results_path, out_path, threads, prompt_len, gen_len, repeat = sys.argv[1:7]
rows = [json.loads(l) for l in open(results_path) if l.strip()]
kiln = next((r for r in rows if r["label"].startswith("kiln")), None)

def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return None

for r in rows:
    if kiln is not None and r is not kiln:
        r["kiln_prefill_ratio"] = kiln["prefill_tokens_per_sec"] / r["prefill_tokens_per_sec"]
        r["kiln_decode_ratio"] = kiln["decode_tokens_per_sec"] / r["decode_tokens_per_sec"]

report = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": git_commit(),
    "host": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "kernel": platform.release()},
    "threads": int(threads),
    "prompt_len": int(prompt_len),
    "gen_len": int(gen_len),
    "repeat": int(repeat),
    "ratio_reference": kiln["label"] if kiln else None,
    "results": rows,
}
with open(out_path, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

ref = kiln["label"] if kiln else "kiln"
head = ["engine", "prefill tok/s", "decode tok/s", "peak RSS MB",
        f"{ref} / peer prefill", f"{ref} / peer decode", "other load"]
table = [[r["label"], fmt(r["prefill_tokens_per_sec"], ".1f"), fmt(r["decode_tokens_per_sec"], ".1f"),
          fmt(r.get("peak_rss_mb"), ".0f"), fmt(r.get("kiln_prefill_ratio"), ".2f") + ("x" if "kiln_prefill_ratio" in r else ""),
          fmt(r.get("kiln_decode_ratio"), ".2f") + ("x" if "kiln_decode_ratio" in r else ""),
          f'{r["other_cpu_cores"]:.2f}']
         for r in rows]
widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
print(f"\nSmolLM2-135M-Instruct Q4_1 GGUF, CPU, {threads} threads, prompt {prompt_len} tokens, "
      f"{gen_len} generated, best of {repeat} ({report['host']['cpu']}, {report['date']})")
print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
print("  ".join("-" * w for w in widths))
for row in table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
print("other load: average cores kept busy by other processes during that engine's run")
busy = [r for r in rows if r["other_cpu_cores"] > 0.25]
if busy:
    print(f"note: other processes used the CPU during {', '.join(r['label'] for r in busy)}: "
          f"with {threads} threads on {os.cpu_count()} cores these numbers are noisy (llama.cpp's "
          "spinning thread pool suffers most); rerun on a quiet machine")
for r in rows:
    g = r.get("generate_check")
    if g and g.get("tokens_match_manual_loop") is False:
        print(f"note: {r['label']}: generate() tokens differ from the manual greedy loop")
print(f"results: {out_path}")
PY
