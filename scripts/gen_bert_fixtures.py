#!/usr/bin/env python3
"""Generate kiln's BERT encoder golden fixture from HF transformers.

Writes tests/fixtures/bert/tiny-bert/: a tiny random-weight BertModel saved
with save_pretrained (config.json + model.safetensors) and the last hidden
states of three fixed token-id sequences, each run alone in eval mode with an
all-ones attention mask. See tests/fixtures/README.md for the file formats.

Run with the pinned venv (scripts/setup-fixtures-venv.sh):

    .venv-fixtures/bin/python scripts/gen_bert_fixtures.py

Pinned versions (../shared/fixtures/requirements-fixtures.txt):
    torch 2.15.0, transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6.

Deterministic (fixed seed, one CPU thread): reruns produce byte-identical files.
"""

from __future__ import annotations

import os

# Single-threaded everywhere so float reductions happen in a fixed order.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import json
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
import transformers
from transformers import BertConfig, BertModel

EXPECTED_VERSIONS = {
    "torch": ("2.15.0", torch.__version__),
    "transformers": ("5.24.0", transformers.__version__),
}

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "tests" / "fixtures" / "bert" / "tiny-bert"

SEED = 6
VOCAB = 128
# Three sequences of different lengths, shaped like real inputs: [CLS]=1 ... [SEP]=2.
SEQUENCES = [
    [1, 2],
    [1, 17, 93, 44, 5, 2],
    [1, 101, 7, 7, 64, 3, 88, 120, 31, 59, 12, 76, 45, 2],
]


def check_versions() -> None:
    bad = [f"{n} {have} (want {want})" for n, (want, have) in EXPECTED_VERSIONS.items() if not have.startswith(want)]
    if bad:
        sys.exit("gen_bert_fixtures: wrong package versions: " + ", ".join(bad))


def to_json(obj, indent: int = 0) -> str:
    """Pretty JSON that keeps lists of numbers on one line (token ids)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) for x in obj):
        items = [inner + to_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "))


def write_tokenizer(vocab_size: int) -> None:
    """A BERT WordPiece tokenizer.json over a made-up vocabulary of exactly `vocab_size` pieces
    (special tokens, letters, digits, punctuation, then '##' continuations), so the serving
    tests run real WordPiece tokenisation against the tiny model."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    pieces = specials + letters + list("0123456789") + list(".,!?'-")
    pieces += ["the", "of", "and", "is", "to", "in", "it", "cat", "dog", "paris", "france"]
    pieces += ["##" + c for c in letters]
    filler = 0
    while len(pieces) < vocab_size:
        pieces.append(f"##{filler}")
        filler += 1
    pieces = pieces[:vocab_size]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(OUT / "tokenizer.json"))


@torch.no_grad()
def main() -> None:
    check_versions()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertModel(config, add_pooling_layer=False)
    # BERT's init (std 0.02, LayerNorm 1/0) makes every layer nearly the identity; larger
    # random weights exercise the arithmetic (norm weights and biases included).
    for name, p in sorted(model.named_parameters()):
        if name.endswith("LayerNorm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif name.endswith("embeddings.weight"):
            p.copy_(0.5 * torch.randn_like(p))
        else:
            p.copy_(0.2 * torch.randn_like(p))
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)

    reloaded = BertModel.from_pretrained(OUT, attn_implementation="eager").eval()
    for (a, pa), (b, pb) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert a == b and torch.equal(pa, pb), f"{a} did not round-trip"

    hidden = {}
    for i, seq in enumerate(SEQUENCES):
        ids = torch.tensor([seq], dtype=torch.long)
        out = reloaded(input_ids=ids, attention_mask=torch.ones_like(ids))
        hidden[f"last_hidden_state_{i}"] = out.last_hidden_state[0].to(torch.float32).numpy()
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in sorted(hidden.items())},
        str(OUT / "reference.safetensors"),
        metadata={"format": "np"},
    )
    reference = {"seed": SEED, "sequences": SEQUENCES, "dtype": "float32"}
    (OUT / "reference.json").write_text(to_json(reference) + "\n", encoding="utf-8")
    write_tokenizer(config.vocab_size)
    print(f"gen_bert_fixtures: wrote {OUT.relative_to(REPO_ROOT)}", flush=True)


if __name__ == "__main__":
    main()
