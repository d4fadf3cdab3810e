#!/usr/bin/env bash
# The GPU check (DESIGN.md, "The GPU machine"). Runs on the GPU machine from the repository
# root, with the bundle that scripts/gpu-bundle.sh built here at target/gpu-bundle (carried
# along: carry ["target/gpu-bundle"]). Needs nvidia-smi and python3 with torch/transformers;
# no Rust toolchain, no network.
#
#   scripts/gpu-check.sh OUTDIR          (e.g. scripts/gpu-check.sh "$OUT")
#
# Stages, each under its own time limit so one hang cannot eat the lease; the whole check
# stays within KILN_CHECK_BUDGET seconds (default 470):
#   a. device      nvidia-smi: name, memory, driver, max SM clock
#   b. ceilings    torch: device-to-device copy GB/s, bf16 (and fp8) matmul TFLOP/s
#   c. equivalence the CPU-vs-CUDA equivalence suite and the kernels'/engine's unit tests
#   d. bench-ops   kiln bench-ops --device cuda --json: every op's GB/s (TFLOP/s), and each
#                  matmul with m > 8 under every GEMM variant (wgmma, mma_pipe, ...)
#   e. peers       the same ops in torch, and torch.matmul bf16 on Llama-3.1-8B shapes
#   f. e2e         kiln bench and HF transformers: random-weight Llama-3.1-8B decode, bf16,
#                  batch 1, 128 prompt + 256 generated tokens, against the roofline
#   g. batch       kiln bench --concurrency 64 (continuous batching through the engine
#                  thread) and HF transformers batched generate, same model shape, 64
#                  requests of 128 prompt + 128 generated tokens: output tokens/s
# Paged attention (issue 4) is in d/e: prefill TFLOP/s vs SDPA's flash backend (bf16, hd128,
# causal, seq 1k/4k/16k) and decode GB/s vs the copy ceiling (batch {1,32,128} x ctx
# {1k,8k,32k}). A stage that fails prints FAIL with its reason and the check goes on. One
# summary table (stage, metric, value, ceiling/peer, ratio, status) is printed last. Files in
# OUTDIR (9): summary.txt device.log ceilings.json equivalence.log bench-ops.jsonl
# bench-ops.log peers.log e2e.log batch.log. Exit status: 0 when no stage failed.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: scripts/gpu-check.sh OUTDIR" >&2
    exit 2
fi
OUT="$1"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
B="${KILN_BUNDLE:-target/gpu-bundle}"
# The bundle's binaries travel packed (binaries.tar.xz): unpack them into a scratch folder.
B="$("$here/gpu-bundle-unpack.sh" "$B")" || { echo "FAIL bundle: cannot unpack $B/binaries.tar.xz"; exit 1; }
PY="${PYTHON:-python3}"
BUDGET="${KILN_CHECK_BUDGET:-470}"
MODEL="@cf/meta/llama-3.1-8b-instruct"
export PYTHONUNBUFFERED=1
unset KILN_ALLOW_NO_GPU # the equivalence suite must fail, not skip, without a GPU

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rows="$work/summary.tsv"
: >"$rows"
failed=0
kiln_device_err="" # set when kiln could not use the GPU at all (bench-ops): e2e is skipped

row() { # stage metric value reference ratio status
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$rows"
    [[ "$6" == FAIL* ]] && failed=1
    return 0
}
# One line, tabs and newlines flattened, at most 90 characters.
oneline() { tr '\t\n' '  ' | sed 's/  */ /g; s/^ //' | cut -c1-90; }
reason() { # exit status [stderr file] -> why it failed
    local rc=$1 msg=""
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        msg="timed out after ${2}s"
    elif [[ -n "${3:-}" && -s "$3" ]]; then
        msg="exit $rc: $(grep -v '^\s*$' "$3" | tail -n 1 | oneline)"
    else
        msg="exit $rc"
    fi
    echo "$msg"
}
# Seconds this stage may take: its own limit, less what the later stages are kept.
limit() { # want keep_for_later
    local left=$((BUDGET - SECONDS - $2)) want=$1
    ((left < want)) && want=$left
    echo "$want"
}
stage() { # letter name limit
    echo
    echo "=== [$1] $2 (limit ${3}s; ${SECONDS}s into the check) ==="
}
run_for() { # seconds command... (rc 124: timed out)
    local secs=$1
    shift
    if ((secs < 10)); then
        echo "not run: out of time (the check's budget is ${BUDGET}s)" >&2
        return 124
    fi
    timeout --kill-after=10 "$secs" "$@"
}

# ---- bundle --------------------------------------------------------------------------------
echo "kiln GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle $B, out $OUT, budget ${BUDGET}s"
if [[ -f "$B/MANIFEST.txt" ]]; then
    sed 's/^/  /' "$B/MANIFEST.txt"
    commit="$(awk '/^commit/ {print $2; exit}' "$B/MANIFEST.txt")"
    row bundle commit "${commit:-?}" - - ok
else
    echo "FAIL bundle: $B/MANIFEST.txt missing (run scripts/gpu-bundle.sh on the dev machine and carry target/gpu-bundle)"
    row bundle manifest missing - - "FAIL (run scripts/gpu-bundle.sh, carry $B)"
fi

# ---- a. device -----------------------------------------------------------------------------
lim=$(limit 30 420)
stage a device "$lim"
{
    run_for "$lim" nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    echo "rc=$?"
    run_for "$lim" nvidia-smi
} >"$OUT/device.log" 2>&1
cat "$OUT/device.log" | head -n 3
gpu_line="$(sed -n 2p "$OUT/device.log" | oneline)"
if grep -q '^rc=0$' "$OUT/device.log" && [[ -n "$gpu_line" && "$gpu_line" != rc=* ]]; then
    row device gpu "$(echo "$gpu_line" | cut -d, -f1)" "$(echo "$gpu_line" | cut -d, -f2- | oneline)" - ok
else
    gpu_line="no GPU seen"
    why="$(grep -v '^rc=' "$OUT/device.log" | grep -v '^\s*$' | head -n 1 | oneline)"
    echo "FAIL device: ${why:-nvidia-smi gave nothing}"
    row device gpu n/a - - "FAIL (${why:-nvidia-smi gave nothing})"
fi

# ---- b. ceilings ---------------------------------------------------------------------------
lim=$(limit 100 360)
stage b ceilings "$lim"
echo "{\"error\": \"not measured\"}" >"$OUT/ceilings.json"
n_before=$(wc -l <"$rows")
run_for "$lim" "$PY" "$here/gpu_ceilings.py" "$OUT/ceilings.json" --summary "$rows" \
    2>"$work/ceil.err" | tee -a "$OUT/device.log"
rc=${PIPESTATUS[0]}
cat "$work/ceil.err" >>"$OUT/device.log"
if ((rc != 0)); then
    why="$(reason "$rc" "$lim" "$work/ceil.err")"
    echo "FAIL ceilings: $why"
    if (($(wc -l <"$rows") == n_before)); then row ceilings "copy GB/s, matmul TFLOP/s" n/a - - "FAIL ($why)"; fi
    failed=1
fi

# ---- c. equivalence ------------------------------------------------------------------------
: >"$OUT/equivalence.log"
for t in ops_equivalence:90:360 cuda_llama:60:340 cuda_bert:20:300 kiln_kernels-lib:30:320 kiln_engine-lib:30:300; do
    IFS=: read -r name want keep <<<"$t"
    lim=$(limit "$want" "$keep")
    stage c "equivalence: $name" "$lim"
    if [[ ! -x "$B/$name" ]]; then
        echo "FAIL $name: $B/$name missing from the bundle"
        row equivalence "$name" n/a - - "FAIL (not in the bundle)"
        continue
    fi
    echo "=== $name ===" >>"$OUT/equivalence.log"
    run_for "$lim" "$B/$name" --test-threads=1 --nocapture >"$work/eq.out" 2>&1
    rc=$?
    cat "$work/eq.out" >>"$OUT/equivalence.log"
    summary="$(grep -E '^ops_equivalence: [0-9]+ passed' "$work/eq.out" | tail -n 1 | sed 's/^ops_equivalence: //')"
    [[ -z "$summary" ]] && summary="$(grep -E '^test result:' "$work/eq.out" | tail -n 1 \
        | sed -E 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 passed, \2 failed, \3 ignored/')"
    grep -E '\bFAIL\b' "$work/eq.out" | head -n 20
    echo "${summary:-no result line}"
    if ((rc == 0)); then
        row equivalence "$name" "${summary:-ok}" - - ok
    else
        why="$(reason "$rc" "$lim")"
        first_fail="$(grep -E '^\S+ +[0-9]+ +FAIL\b' "$work/eq.out" | head -n 1 | oneline)"
        [[ -z "$first_fail" ]] && first_fail="$(awk '/panicked at/ { getline msg; print $0 " " msg; exit }' "$work/eq.out" \
            | sed -E "s/^thread '([^']*)'.*panicked at [^ ]*/\1:/" | oneline)"
        echo "FAIL $name: $why ${first_fail}"
        row equivalence "$name" "${summary:-n/a}" - - "FAIL ($why${first_fail:+; $first_fail})"
    fi
done

# ---- d. bench-ops --------------------------------------------------------------------------
lim=$(limit 180 280)
stage d "kiln bench-ops --device cuda" "$lim"
: >"$OUT/bench-ops.jsonl"
if [[ -x "$B/kiln" ]]; then
    # --gemm-variants all: each m > 8 matmul case again under every GEMM variant this card
    # runs (KILN_GEMM names), for gpu_peers.py's variant table; --attn-variants all: each
    # attention prefill case under every attention variant (KILN_ATTN names) likewise.
    run_for "$lim" "$B/kiln" bench-ops --device cuda --json --budget-ms 200 --gemm-variants all \
        --attn-variants all \
        >"$OUT/bench-ops.jsonl" 2>"$OUT/bench-ops.log"
    rc=$?
    if ((rc != 0)) && [[ ! -s "$OUT/bench-ops.jsonl" ]]; then
        kiln_device_err="$(reason "$rc" "$lim" "$OUT/bench-ops.log")"
    fi
    n_ok=$(grep -c '"status":"ok"' "$OUT/bench-ops.jsonl")
    n_var=$(grep -c '"variant"' "$OUT/bench-ops.jsonl")
    n_uns=$(grep -c '"status":"unsupported' "$OUT/bench-ops.jsonl")
    n_err=$(grep -c '"status":"error' "$OUT/bench-ops.jsonl")
    grep '"status":"error' "$OUT/bench-ops.jsonl" | head -n 5
    counts="ok $n_ok, unsupported $n_uns, error $n_err ($n_var GEMM-variant rows)"
    echo "bench-ops: $counts (exit $rc)"
    if ((rc == 0)); then
        row kernels "bench-ops cases" "$counts" - - ok
    else
        why="$(reason "$rc" "$lim" "$OUT/bench-ops.log")"
        echo "FAIL bench-ops: $why"
        row kernels "bench-ops cases" "$counts" - - "FAIL ($why)"
    fi
else
    echo "FAIL bench-ops: $B/kiln missing from the bundle" | tee "$OUT/bench-ops.log"
    row kernels "bench-ops cases" n/a - - "FAIL (kiln not in the bundle)"
fi

# ---- e. peers ------------------------------------------------------------------------------
lim=$(limit 120 220)
stage e "torch peers (ops, Llama-3.1-8B GEMM shapes)" "$lim"
n_before=$(wc -l <"$rows")
run_for "$lim" "$PY" "$here/gpu_peers.py" ops --kiln "$OUT/bench-ops.jsonl" \
    --ceilings "$OUT/ceilings.json" --summary "$rows" >"$OUT/peers.log" 2>&1
rc=$?
tail -n 75 "$OUT/peers.log"
if ((rc != 0)); then
    why="$(reason "$rc" "$lim" "$OUT/peers.log")"
    echo "FAIL peers: $why"
    if (($(wc -l <"$rows") == n_before)); then row peers "ops vs torch" n/a - - "FAIL ($why)"; fi
    failed=1
fi

# ---- f. end to end -------------------------------------------------------------------------
lim=$(limit 120 180)
stage f "e2e: kiln bench $MODEL --random-weights --device cuda" "$lim"
kiln_cmd=("$B/kiln" bench "$MODEL" --random-weights --device cuda --dtype bf16
    --prompt-len 128 --gen-len 256 --repeat 1 --json)
{
    echo "\$ ${kiln_cmd[*]}"
} >"$OUT/e2e.log"
kiln_err=""
if [[ -n "$kiln_device_err" ]]; then
    kiln_err="not run: kiln bench-ops could not use the GPU: $kiln_device_err"
    echo "kiln e2e: $kiln_err" | tee -a "$OUT/e2e.log"
elif [[ -x "$B/kiln" ]]; then
    run_for "$lim" "${kiln_cmd[@]}" >"$work/kiln-e2e.json" 2>"$work/kiln-e2e.err"
    rc=$?
    cat "$work/kiln-e2e.json" "$work/kiln-e2e.err" >>"$OUT/e2e.log"
    if ((rc != 0)); then
        kiln_err="$(reason "$rc" "$lim" "$work/kiln-e2e.err")"
        echo "kiln e2e: $kiln_err"
    else
        cat "$work/kiln-e2e.json"
    fi
else
    kiln_err="kiln not in the bundle"
fi
lim=$(limit 200 65)
stage f "e2e: HF transformers, same model shape and card" "$lim"
n_before=$(wc -l <"$rows")
run_for "$lim" "$PY" "$here/gpu_peers.py" e2e --kiln "$work/kiln-e2e.json" --kiln-error "$kiln_err" \
    --ceilings "$OUT/ceilings.json" --summary "$rows" --prompt-len 128 --gen-len 256 \
    2>&1 | tee -a "$OUT/e2e.log"
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
    why="$(reason "$rc" "$lim" "$OUT/e2e.log")"
    echo "FAIL e2e: $why"
    if (($(wc -l <"$rows") == n_before)); then
        row e2e "HF transformers decode tok/s" n/a - - "FAIL ($why)"
        row e2e "kiln decode tok/s" n/a - - "n/a (${kiln_err:-not compared})"
    fi
    failed=1
fi

# ---- g. batch: 64 concurrent requests -----------------------------------------------------
CONC=64
batch_len=(--prompt-len 128 --gen-len 128)
lim=$(limit 90 40)
stage g "batch: kiln bench $MODEL --concurrency $CONC --device cuda" "$lim"
kiln_cmd=("$B/kiln" bench "$MODEL" --random-weights --device cuda --dtype bf16
    --concurrency "$CONC" "${batch_len[@]}" --repeat 1 --warmup-tokens 4 --json)
echo "\$ ${kiln_cmd[*]}" >"$OUT/batch.log"
batch_err=""
if [[ -n "$kiln_device_err" ]]; then
    batch_err="not run: kiln bench-ops could not use the GPU: $kiln_device_err"
    echo "kiln batch: $batch_err" | tee -a "$OUT/batch.log"
elif [[ -x "$B/kiln" ]]; then
    run_for "$lim" "${kiln_cmd[@]}" >"$work/kiln-batch.json" 2>"$work/kiln-batch.err"
    rc=$?
    cat "$work/kiln-batch.json" "$work/kiln-batch.err" >>"$OUT/batch.log"
    if ((rc != 0)); then
        batch_err="$(reason "$rc" "$lim" "$work/kiln-batch.err")"
        echo "kiln batch: $batch_err"
    else
        cat "$work/kiln-batch.json"
    fi
else
    batch_err="kiln not in the bundle"
fi
lim=$(limit 150 5)
stage g "batch: HF transformers generate, $CONC prompts, same model shape and card" "$lim"
n_before=$(wc -l <"$rows")
run_for "$lim" "$PY" "$here/gpu_peers.py" batch --kiln "$work/kiln-batch.json" --kiln-error "$batch_err" \
    --batch "$CONC" "${batch_len[@]}" --summary "$rows" 2>&1 | tee -a "$OUT/batch.log"
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
    why="$(reason "$rc" "$lim" "$OUT/batch.log")"
    echo "FAIL batch: $why"
    if (($(wc -l <"$rows") == n_before)); then
        row batch "HF generate $CONC requests out tok/s" n/a - - "FAIL ($why)"
        row batch "kiln $CONC requests out tok/s" n/a - - "n/a (${batch_err:-not compared})"
    fi
    failed=1
fi

# ---- summary -------------------------------------------------------------------------------
{
    echo
    echo "=== kiln GPU check summary: $gpu_line, commit ${commit:-?}, $(date -u +%Y-%m-%d), ${SECONDS}s ==="
    awk -F'\t' 'BEGIN { printf "%-11s %-38s %-30s %-34s %-13s %s\n", "stage", "metric", "value", "ceiling/peer", "ratio", "status" }
        { printf "%-11s %-38s %-30s %-34s %-13s %s\n", $1, substr($2, 1, 38), substr($3, 1, 30), substr($4, 1, 34), substr($5, 1, 13), $6 }' "$rows"
    echo "logs: $OUT (summary.txt device.log ceilings.json equivalence.log bench-ops.jsonl bench-ops.log peers.log e2e.log batch.log)"
} | tee "$OUT/summary.txt"
grep -q $'\tFAIL' "$rows" && failed=1
exit "$failed"
