#!/usr/bin/env python3
"""The GPU's measured ceilings, through PyTorch: device-to-device copy bandwidth and the
bf16 (and fp8, when torch._scaled_mm runs) matrix-product rate.

    python3 scripts/gpu_ceilings.py OUT/ceilings.json [--summary ROWS.tsv]

Copy: 1 GiB buffers, bytes read + bytes written, median of 20 timed copies (CUDA events)
after warm-up. Matmul: 8192^3 on random data (never zeros), median of 20. Writes a JSON
object (what failed is recorded with its reason) and prints a short table; with --summary,
appends tab-separated summary rows (stage, metric, value, reference, ratio, status).
"""

import argparse
import json
import statistics
import sys
import time


def median_ms(torch, fn, iters=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), times


def copy_ceiling(torch):
    n = 1 << 30  # bytes per buffer
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    src.random_(0, 256)
    dst = torch.empty_like(src)
    ms, times = median_ms(torch, lambda: dst.copy_(src))
    ok = torch.equal(dst[: 1 << 20], src[: 1 << 20])
    del src, dst
    return {
        "bytes_per_copy": 2 * n,
        "median_ms": ms,
        "gb_s": 2 * n / (ms * 1e-3) / 1e9,
        "spread_ms": [min(times), max(times)],
        "verified": bool(ok),
    }


def matmul_ceiling(torch, n=8192):
    a = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
    b = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
    ms, times = median_ms(torch, lambda: torch.matmul(a, b))
    return {
        "shape": [n, n, n],
        "median_ms": ms,
        "tflop_s": 2 * n**3 / (ms * 1e-3) / 1e12,
        "spread_ms": [min(times), max(times)],
    }


def fp8_ceiling(torch, n=8192):
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return {"status": "unavailable: this torch has no _scaled_mm / float8_e4m3fn"}
    a = (torch.rand(n, n, device="cuda") * 2 - 1).to(torch.float8_e4m3fn)
    # _scaled_mm wants the second operand column-major.
    b = (torch.rand(n, n, device="cuda") * 2 - 1).to(torch.float8_e4m3fn).t().contiguous().t()
    one = torch.tensor(1.0, device="cuda")
    fn = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    ms, times = median_ms(torch, fn)
    return {
        "shape": [n, n, n],
        "median_ms": ms,
        "tflop_s": 2 * n**3 / (ms * 1e-3) / 1e12,
        "spread_ms": [min(times), max(times)],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--summary")
    args = ap.parse_args()
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rows = []

    def emit(metric, value, unit, status):
        shown = f"{value:.1f} {unit}" if isinstance(value, float) else str(value)
        rows.append(("ceilings", metric, shown, "-", "-", status))

    try:
        import torch

        result["torch"] = torch.__version__
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
        props = torch.cuda.get_device_properties(0)
        result["device"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": props.total_memory / 2**30,
            "l2_mib": getattr(props, "L2_cache_size", 0) / 2**20,
        }
        print(f"device: {props.name}, sm_{props.major}{props.minor}, "
              f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB")
    except Exception as e:  # no torch, no GPU: every ceiling fails with this reason
        reason = f"{type(e).__name__}: {e}"
        result["error"] = reason
        print(f"FAIL ceilings: {reason}")
        for metric in ("copy GB/s", "bf16 matmul TFLOP/s", "fp8 matmul TFLOP/s"):
            emit(metric, "n/a", "", f"FAIL ({reason[:60]})")
        finish(args, result, rows)
        return 1

    for key, metric, unit, fn in (
        ("copy", "copy GB/s (1 GiB, r+w)", "GB/s", copy_ceiling),
        ("bf16_matmul", "bf16 matmul TFLOP/s (8192^3)", "TFLOP/s", matmul_ceiling),
        ("fp8_matmul", "fp8 _scaled_mm TFLOP/s (8192^3)", "TFLOP/s", fp8_ceiling),
    ):
        try:
            r = fn(torch)
            result[key] = r
            if "status" in r:
                emit(metric, "n/a", "", r["status"][:60])
                print(f"{metric}: {r['status']}")
                continue
            value = r.get("gb_s", r.get("tflop_s"))
            print(f"{metric}: {value:.1f} {unit} (median {r['median_ms']:.3f} ms)")
            emit(metric, value, unit, "ok")
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            result[key] = {"error": reason}
            print(f"FAIL {metric}: {reason}")
            emit(metric, "n/a", "", f"FAIL ({reason[:60]})")
        torch.cuda.empty_cache()
    finish(args, result, rows)
    return 0 if "copy" in result and "gb_s" in result["copy"] else 1


def finish(args, result, rows):
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if args.summary:
        with open(args.summary, "a") as f:
            for row in rows:
                f.write("\t".join(str(c).replace("\t", " ") for c in row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
