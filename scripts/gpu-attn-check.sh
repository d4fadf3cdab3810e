#!/usr/bin/env bash
# The sm_90a wgmma attention prefill, verified and timed in one run on the GPU machine
# (docs/paged-attention.md, "The sm_90a wgmma prefill"). Runs from the repository root with the
# bundle of scripts/gpu-bundle.sh (carry ["target/gpu-bundle"]); at most 8.5 minutes (its limits):
#
#   scripts/gpu-attn-check.sh OUTDIR          (e.g. scripts/gpu-attn-check.sh "$OUT")
#
#   1. ops_equivalence, paged_attention and varlen_attention only: every prefill case under
#      attn=mma and attn=wgmma against the CPU twin (NaN fails)      -> OUTDIR/attn-eq.log
#   2. kiln bench-ops --ops paged_attention,varlen_attention --attn-variants all
#                                                                   -> OUTDIR/attn-bench.jsonl
#   3. gpu_peers.py's attention variant table: TFLOP/s of default / mma / wgmma and SDPA flash,
#      causal bf16 hd128, seq 1k / 4k / 16k                          -> OUTDIR/attn-peers.log
# Exit status 0 when all three ran and no equivalence case failed.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: scripts/gpu-attn-check.sh OUTDIR" >&2
    exit 2
fi
OUT="$1"
mkdir -p "$OUT" || exit 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
B="${KILN_BUNDLE:-target/gpu-bundle}"
B="$("$here/gpu-bundle-unpack.sh" "$B")" || { echo "cannot unpack $B/binaries.tar.xz"; exit 1; }
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
unset KILN_ALLOW_NO_GPU
rc_all=0
[[ -f "$B/MANIFEST.txt" ]] && head -n 3 "$B/MANIFEST.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || rc_all=1

echo "=== 1. equivalence (paged_attention, varlen_attention; attn=mma and attn=wgmma)"
KILN_OPS=paged_attention,varlen_attention timeout --kill-after=10 240 \
    "$B/ops_equivalence" cuda_matches_cpu --exact --test-threads=1 --nocapture >"$OUT/attn-eq.log" 2>&1
rc=$?
grep -E '^(device|attention|gemm variants)' "$OUT/attn-eq.log"
grep -E '\b(FAIL)\b' "$OUT/attn-eq.log" | head -n 30
for v in mma wgmma; do
    n_pass=$(grep -E "attn=$v\b" "$OUT/attn-eq.log" | grep -c ' PASS ')
    n_fail=$(grep -E "attn=$v\b" "$OUT/attn-eq.log" | grep -c ' FAIL ')
    echo "attn=$v: $n_pass PASS, $n_fail FAIL"
done
grep -E '^ops_equivalence:' "$OUT/attn-eq.log" || tail -n 5 "$OUT/attn-eq.log"
((rc != 0)) && { echo "equivalence: exit $rc"; rc_all=1; }

echo "=== 2. bench-ops (paged_attention, varlen_attention) under every attention variant"
timeout --kill-after=10 150 "$B/kiln" bench-ops --device cuda --json --budget-ms 200 \
    --ops paged_attention,varlen_attention --attn-variants all \
    >"$OUT/attn-bench.jsonl" 2>"$OUT/attn-bench.log"
rc=$?
cat "$OUT/attn-bench.log"
((rc != 0)) && { echo "bench-ops: exit $rc"; rc_all=1; }

echo "=== 3. attention variants vs SDPA flash"
timeout --kill-after=10 120 "$PY" -c '
import sys, types
sys.path.insert(0, sys.argv[1])
import torch, gpu_peers
rows = []
gpu_peers.attention_variants(types.SimpleNamespace(kiln=sys.argv[2]), torch, rows)
print()
for r in rows:
    print("\t".join(map(str, r)))
' "$here" "$OUT/attn-bench.jsonl" 2>&1 | tee "$OUT/attn-peers.log"
((PIPESTATUS[0] != 0)) && { echo "peers: failed"; rc_all=1; }
exit $rc_all
