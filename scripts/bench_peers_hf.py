#!/usr/bin/env python3
"""HF transformers (PyTorch, CPU) peer for scripts/bench-cpu-peers.sh.

Loads a GGUF through transformers (dequantised to --dtype), then measures the same workload
as `kiln bench`:

  prompt  = prompt_len pseudo-random ids, id_i = (i * 2654435761 + 12345) mod vocab
  prefill = one forward over the whole prompt with an empty DynamicCache (logits of the
            last position only, logits_to_keep=1) + argmax
  decode  = gen_len forwards of one token each with past_key_values + argmax (a manual
            greedy loop; no sampling, no EOS stop)

One untimed warm-up run, then the best of --repeat timed runs. As a cross-check it also
times model.generate() once (greedy, min_new_tokens = max_new_tokens = gen_len, EOS
disabled) and reports its decode rate as (gen_len - 1) / (t_generate - t_prefill): generate
runs one prompt forward and gen_len - 1 one-token forwards. The tokens it produces are
compared with the manual loop's.

Peak RSS is getrusage(RUSAGE_SELF).ru_maxrss of this process, so run one dtype per process
(the shell script does). Prints one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import sys
import time
import warnings


def rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; report MB of 1e6 bytes like `kiln bench`.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="path of the .gguf file")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-generate-check", action="store_true", help="skip the generate() cross-check")
    args = ap.parse_args()
    for name in ("prompt_len", "gen_len", "threads", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    baseline = rss_mb()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    after_import = rss_mb()

    gguf_dir, gguf_file = os.path.split(os.path.abspath(args.gguf))
    t_load = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=dtype)
    model.eval()
    load_s = time.perf_counter() - t_load
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6

    # transformers 5.x renames forward's `past_key_values` to `cache`; use whichever exists.
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    vocab = model.config.vocab_size
    prompt = torch.tensor(
        [[(i * 2654435761 + 12345) % vocab for i in range(args.prompt_len)]], dtype=torch.long
    )

    def run_once(gen_len: int):
        cache = DynamicCache(config=model.config)
        t0 = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
        nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        prefill = time.perf_counter() - t0
        tokens = [int(nxt)]
        t1 = time.perf_counter()
        for _ in range(gen_len):
            # The DynamicCache is updated in place; positions follow from its length.
            out = model(
                input_ids=nxt,
                use_cache=True,
                logits_to_keep=1,
                **{cache_kw: cache},
            )
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            tokens.append(int(nxt))
        decode = time.perf_counter() - t1
        return prefill, decode, tokens

    with torch.inference_mode():
        run_once(min(args.gen_len, 8))  # warm-up
        best_prefill = best_decode = float("inf")
        tokens: list[int] = []
        for _ in range(args.repeat):
            p, d, tokens = run_once(args.gen_len)
            best_prefill = min(best_prefill, p)
            best_decode = min(best_decode, d)

        generate = None
        if not args.no_generate_check:
            t0 = time.perf_counter()
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=args.gen_len,
                min_new_tokens=args.gen_len,
                eos_token_id=None,
                pad_token_id=0,
            )
            total = time.perf_counter() - t0
            gen_tokens = out[0, args.prompt_len:].tolist()
            decode_s = total - best_prefill
            generate = {
                "total_s": total,
                "decode_tokens_per_sec": (args.gen_len - 1) / decode_s if args.gen_len > 1 and decode_s > 0 else None,
                "tokens_match_manual_loop": gen_tokens == tokens[: args.gen_len],
            }

    result = {
        "engine": f"transformers {args.dtype}",
        "runtime": f"torch {torch.__version__}, transformers {transformers.__version__} (CPU)",
        "gguf": os.path.abspath(args.gguf),
        "weights": f"GGUF Q4_1 dequantised to {args.dtype}",
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "vocab_size": vocab,
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
        "repeat": args.repeat,
        "load_s": load_s,
        "prefill_tokens_per_sec": args.prompt_len / best_prefill,
        "decode_tokens_per_sec": args.gen_len / best_decode,
        "weights_mb": weights_mb,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
        "after_import_rss_mb": after_import,
        "first_tokens": tokens[:8],
        "generate_check": generate,
        "method": "manual greedy loop: 1 prompt forward (DynamicCache, logits_to_keep=1) + gen_len one-token forwards; best of repeat after 1 warm-up",
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
