#!/usr/bin/env python3
"""Generate kiln's golden reference fixtures from HF transformers.

Writes everything under tests/fixtures/{llama,smollm2,chat_templates,gguf}:
tiny random-weight Llama/Mistral models with forward and greedy references,
SmolLM2-135M references computed from the GGUF installed by
scripts/fetch-models.sh, chat-template renderings and GGUF dequantization
references. See tests/fixtures/README.md for the file formats.

Run with the pinned venv (scripts/setup-fixtures-venv.sh):

    .venv-fixtures/bin/python scripts/gen_fixtures.py

Pinned versions (../shared/fixtures/requirements-fixtures.txt):
    torch 2.15.0, transformers 5.24.0, gguf 0.19.0, tokenizers 0.23.3,
    safetensors 0.8.0, numpy 2.4.6, accelerate 1.15.0.

Everything is deterministic (fixed seeds, one CPU thread, sorted JSON keys
where order carries no meaning): reruns produce byte-identical files.
"""

from __future__ import annotations

import os

# Single-threaded everywhere so float reductions happen in a fixed order.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import jinja2
import numpy as np
import safetensors.numpy
import safetensors.torch
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

EXPECTED_VERSIONS = {
    "torch": ("2.15.0", torch.__version__),
    "transformers": ("5.24.0", transformers.__version__),
    "gguf": ("0.19.0", None),
    "tokenizers": ("0.23.3", tokenizers.__version__),
}

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"

KILN_HOME = Path(os.environ.get("KILN_HOME", Path.home() / ".cache" / "kiln"))
SMOLLM2_DIR = KILN_HOME / "models" / "@hf" / "huggingfacetb" / "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB = 512
TINY_BOS_ID = 1  # <|im_start|>
TINY_EOS_ID = 2  # <|im_end|>
PROMPT_LENGTHS = (1, 7, 23)
TINY_NEW_TOKENS = 16
SMOL_NEW_TOKENS = 32


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def check_versions() -> None:
    import importlib.metadata as md

    bad = []
    for name, (want, have) in EXPECTED_VERSIONS.items():
        have = have or md.version(name)
        if not have.startswith(want):
            bad.append(f"{name} {have} (want {want})")
    if bad:
        sys.exit("gen_fixtures: wrong package versions: " + ", ".join(bad))


def to_json(obj, indent: int = 0) -> str:
    """Pretty JSON that keeps lists of numbers on one line (token ids)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) for x in obj):
        items = [inner + to_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(obj) + "\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np"})


def log(msg: str) -> None:
    print(f"gen_fixtures: {msg}", flush=True)


@torch.no_grad()
def greedy_argmax(model, prompt: list[int], max_new: int, stop_ids: set[int]) -> list[int]:
    """Plain greedy decoding with a KV cache: argmax of the raw logits, no
    logits processors. Stops after emitting a token in stop_ids (kept)."""
    ids = torch.tensor([prompt], dtype=torch.long)
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    generated: list[int] = []
    for _ in range(max_new):
        nxt = int(out.logits[0, -1].argmax())
        generated.append(nxt)
        if nxt in stop_ids:
            break
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return generated


@torch.no_grad()
def hf_generate(model, prompt: list[int], max_new: int, eos_id: int | None) -> list[int]:
    """The same decode through model.generate, used as a cross-check."""
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new,
        eos_token_id=eos_id,
        pad_token_id=0,
        num_beams=1,
    )
    # generate() fills fields left at their defaults (eos_token_id=None among
    # them) from model.generation_config, so replace that too.
    model.generation_config = config
    ids = torch.tensor([prompt], dtype=torch.long)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, len(prompt):].tolist()


def checked_greedy(model, prompt, max_new, stop_ids: set[int], eos_for_generate):
    mine = greedy_argmax(model, prompt, max_new, stop_ids)
    theirs = hf_generate(model, prompt, max_new, eos_for_generate)
    if mine != theirs:
        raise RuntimeError(f"greedy mismatch: argmax loop {mine} vs generate {theirs}")
    return mine


@torch.no_grad()
def forward_logits(model, prompt: list[int]) -> np.ndarray:
    out = model(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


# --------------------------------------------------------------------------
# tiny byte-level BPE tokenizer shared by the tiny models
# --------------------------------------------------------------------------

TOKENIZER_CORPUS = """\
A kiln is an oven that fires clay into pottery, bricks and tiles.
The potter loads the kiln, closes the door and raises the heat slowly.
Glazes melt near twelve hundred degrees and cool into glass.
Every firing is logged: time, temperature, and the colour of the flame.
def fire(kiln, hours=8):\n    for hour in range(hours):\n        kiln.heat += 100\n    return kiln
SELECT name, count(*) FROM pots WHERE glaze = 'celadon' GROUP BY name;
Numbers like 3.14159, 2048, 1e-5 and 65536 show up in logs.
Café, naïve, jalapeño, über, façade: accents appear in names.
東京の窯 と 陶器。 Keramik aus München. Ça chauffe !
Emoji too: 🔥🏺✨ and 👩‍🔬 at the bench.
   Indented lines,\ttabs\tand trailing spaces   \n\n\n
user: What temperature is stoneware fired at?
assistant: Stoneware is usually fired between 1180 and 1300 degrees Celsius.
"""


def train_tiny_tokenizer() -> tokenizers.Tokenizer:
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [line for line in TOKENIZER_CORPUS.splitlines() for _ in range(3)]
    tok.train_from_iterator(corpus, trainer=trainer)
    if tok.get_vocab_size() != TINY_VOCAB:
        raise RuntimeError(f"tiny tokenizer has {tok.get_vocab_size()} tokens, want {TINY_VOCAB}")
    for want_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != want_id:
            raise RuntimeError(f"{token} is not id {want_id}")
    return tok


def tiny_tokenizer_config(chat_template: str) -> dict:
    """tokenizer_config.json in the Hub layout (chat_template inline)."""
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": "<|im_start|>",
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<|endoftext|>",
    }


# --------------------------------------------------------------------------
# tiny random-weight Llama-family models
# --------------------------------------------------------------------------


@dataclass
class TinySpec:
    name: str
    arch: str  # "llama" | "mistral"
    seed: int
    kv_heads: int
    rope_theta: float
    rope_scaling: dict | None = None
    tied: bool = False
    dtype: str = "float32"  # storage dtype of the weights
    shards: int = 1
    extra: dict = field(default_factory=dict)


TINY_SPECS = [
    TinySpec(
        name="tiny-llama3",
        arch="llama",
        seed=1001,
        kv_heads=2,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    TinySpec(name="tiny-tied", arch="llama", seed=1002, kv_heads=4, rope_theta=10000.0, tied=True),
    TinySpec(
        name="tiny-linear-bf16",
        arch="llama",
        seed=1003,
        kv_heads=1,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
        dtype="bfloat16",
    ),
    TinySpec(
        name="tiny-mistral",
        arch="mistral",
        seed=1004,
        kv_heads=2,
        rope_theta=1000000.0,
        shards=2,
        extra={"sliding_window": None},
    ),
]


def hub_style_config(spec: TinySpec) -> dict:
    """config.json as Hub checkpoints (transformers 4.x) spell it: top-level
    rope_theta / rope_scaling, never the transformers-5 rope_parameters."""
    cfg = {
        "architectures": ["MistralForCausalLM" if spec.arch == "mistral" else "LlamaForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": TINY_BOS_ID,
        "eos_token_id": TINY_EOS_ID,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "model_type": spec.arch,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-05,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": spec.tied,
        "torch_dtype": spec.dtype,
        "use_cache": True,
        "vocab_size": TINY_VOCAB,
    }
    if spec.arch == "llama":
        cfg.update(attention_bias=False, mlp_bias=False, pretraining_tp=1, rope_scaling=spec.rope_scaling)
    cfg.update(spec.extra)
    return dict(sorted(cfg.items()))


def random_state_dict(spec: TinySpec) -> dict[str, torch.Tensor]:
    """HF-named weights drawn from N(0, std) with a per-model seed. Norm
    weights are 1 + small noise so they matter but stay well-conditioned."""
    gen = torch.Generator().manual_seed(spec.seed)
    hidden, inter, head_dim = 64, 128, 16
    q_out, kv_out = 4 * head_dim, spec.kv_heads * head_dim

    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (TINY_VOCAB, hidden)}
    for layer in range(2):
        p = f"model.layers.{layer}"
        shapes.update(
            {
                f"{p}.self_attn.q_proj.weight": (q_out, hidden),
                f"{p}.self_attn.k_proj.weight": (kv_out, hidden),
                f"{p}.self_attn.v_proj.weight": (kv_out, hidden),
                f"{p}.self_attn.o_proj.weight": (hidden, q_out),
                f"{p}.mlp.gate_proj.weight": (inter, hidden),
                f"{p}.mlp.up_proj.weight": (inter, hidden),
                f"{p}.mlp.down_proj.weight": (hidden, inter),
                f"{p}.input_layernorm.weight": (hidden,),
                f"{p}.post_attention_layernorm.weight": (hidden,),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    if not spec.tied:
        shapes["lm_head.weight"] = (TINY_VOCAB, hidden)

    storage = getattr(torch, spec.dtype)
    weights = {}
    for name, shape in shapes.items():  # insertion order is fixed: seeds line up
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):
            value = 1.0 + 0.1 * noise
        elif name == "model.embed_tokens.weight":
            value = 0.5 * noise
        else:
            value = 0.2 * noise
        weights[name] = value.to(storage).contiguous()
    return weights


def save_weights(model_dir: Path, spec: TinySpec, weights: dict[str, torch.Tensor]) -> None:
    meta = {"format": "pt"}
    if spec.shards == 1:
        safetensors.torch.save_file(weights, str(model_dir / "model.safetensors"), metadata=meta)
        return
    names = list(weights)
    per_shard = -(-len(names) // spec.shards)
    weight_map = {}
    for i in range(spec.shards):
        shard_name = f"model-{i + 1:05d}-of-{spec.shards:05d}.safetensors"
        part = {n: weights[n] for n in names[i * per_shard : (i + 1) * per_shard]}
        safetensors.torch.save_file(part, str(model_dir / shard_name), metadata=meta)
        weight_map.update({n: shard_name for n in part})
    total = sum(t.numel() * t.element_size() for t in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(model_dir / "model.safetensors.index.json", index)


def load_tiny(model_dir: Path, spec: TinySpec, weights: dict[str, torch.Tensor]):
    """Load the written directory back through transformers (float32, eager)
    and check it understood the Hub-style config and every weight."""
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    model.eval()
    cfg = model.config
    want_arch = "MistralForCausalLM" if spec.arch == "mistral" else "LlamaForCausalLM"
    if type(model).__name__ != want_arch:
        raise RuntimeError(f"{spec.name}: loaded {type(model).__name__}")
    rope = dict(cfg.rope_parameters)
    if rope.get("rope_theta") != spec.rope_theta:
        raise RuntimeError(f"{spec.name}: rope_theta not understood: {rope}")
    want_type = (spec.rope_scaling or {}).get("rope_type", "default")
    if rope.get("rope_type") != want_type:
        raise RuntimeError(f"{spec.name}: rope type not understood: {rope}")
    for key, value in (spec.rope_scaling or {}).items():
        if rope.get(key) != value:
            raise RuntimeError(f"{spec.name}: rope {key} = {rope.get(key)}, want {value}")
    state = model.state_dict()
    for name, tensor in weights.items():
        if not torch.equal(state[name], tensor.to(torch.float32)):
            raise RuntimeError(f"{spec.name}: {name} changed on load")
    if spec.tied and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise RuntimeError(f"{spec.name}: lm_head is not tied")
    return model


def check_tiny_tokenizer(model_dir: Path, tok: tokenizers.Tokenizer) -> None:
    """transformers must read the hand-written tokenizer files as intended."""
    loaded = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    sample = "<|im_start|>user\nCafé 🔥 kiln<|im_end|>\n"
    if loaded(sample).input_ids != tok.encode(sample).ids:
        raise RuntimeError(f"{model_dir.name}: transformers tokenizes differently")
    if (loaded.bos_token_id, loaded.eos_token_id) != (TINY_BOS_ID, TINY_EOS_ID):
        raise RuntimeError(f"{model_dir.name}: bos/eos ids not understood")
    loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def write_tiny_model(spec: TinySpec, tok: tokenizers.Tokenizer, chat_template: str) -> None:
    model_dir = FIXTURES / "llama" / spec.name
    model_dir.mkdir(parents=True, exist_ok=True)
    for stale in model_dir.glob("*.safetensors*"):
        stale.unlink()

    write_json(model_dir / "config.json", hub_style_config(spec))
    write_json(model_dir / "generation_config.json", {"bos_token_id": TINY_BOS_ID, "eos_token_id": TINY_EOS_ID})
    tok.save(str(model_dir / "tokenizer.json"))
    write_json(model_dir / "tokenizer_config.json", tiny_tokenizer_config(chat_template))
    check_tiny_tokenizer(model_dir, tok)
    weights = random_state_dict(spec)
    save_weights(model_dir, spec, weights)

    model = load_tiny(model_dir, spec, weights)
    rng = np.random.RandomState(spec.seed)
    prompts = [rng.randint(3, TINY_VOCAB, size=n).tolist() for n in PROMPT_LENGTHS]
    greedy = [checked_greedy(model, p, TINY_NEW_TOKENS, set(), None) for p in prompts]
    if any(len(g) != TINY_NEW_TOKENS for g in greedy):
        raise RuntimeError(f"{spec.name}: a greedy run stopped early")
    logits = {f"logits_{i}": forward_logits(model, p) for i, p in enumerate(prompts)}

    write_json(
        model_dir / "reference.json",
        {"seed": spec.seed, "prompts": prompts, "greedy": greedy, "dtype": "float32"},
    )
    save_tensors(model_dir / "reference.safetensors", logits)
    distinct = len({t for g in greedy for t in g})
    log(f"{spec.name}: greedy {greedy[2][:8]}... ({distinct} distinct tokens over 3 runs)")


# --------------------------------------------------------------------------
# SmolLM2-135M-Instruct (real weights, from the GGUF)
# --------------------------------------------------------------------------

SMOL_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
]

SMOL_CHAT = [{"role": "user", "content": "What is the capital of France?"}]

TOKENIZER_CASES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Punctuation: ;:,.!? -- (brackets) [square] {curly} 'single' \"double\"",
    "Numbers 0 7 42 123 4567 89012 3.14159 -273.15 1e-9 1,000,000",
    "Café crème brûlée, naïve façade, jalapeño, über, Müller, España, niño",
    "日本語のテキストと中文文本和한국어",
    "Emoji: 😀 🔥 👍🏽 🇫🇷",
    "ZWJ family 👨‍👩‍👧‍👦 and scientist 👩🏾‍🔬 and rainbow flag 🏳️‍🌈",
    "multiple    spaces   between  words",
    "tabs\tbetween\t\twords",
    "paragraphs\n\n\nwith blank lines\n",
    " leading space",
    "trailing space ",
    "   both sides   ",
    "\n",
    " ",
    "",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user",
    "<|endoftext|>",
    "URL https://example.com/path?query=1&x=y#frag",
    "Mixed: naïve 東京 😀 3.5% @user #tag",
    "ALL CAPS AND lower case And Title Case",
    "don't can't won't it's I'm you're",
]


def smollm2_path() -> Path:
    path = SMOLLM2_DIR / SMOLLM2_GGUF
    if not path.is_file():
        sys.exit(f"gen_fixtures: {path} not found; run scripts/fetch-models.sh first")
    return path


def write_smollm2_fixtures() -> str:
    """Writes tests/fixtures/smollm2/*; returns the GGUF's chat template."""
    out = FIXTURES / "smollm2"
    log("loading SmolLM2 GGUF through transformers (dequantizes to float32)")
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    eos = tok.eos_token_id

    prompts, last_logits = [], {}
    for i, text in enumerate(SMOL_PROMPTS):
        ids = tok(text).input_ids
        greedy = checked_greedy(model, ids, SMOL_NEW_TOKENS, set(), None)
        prompts.append({"text": text, "prompt_ids": ids, "greedy_ids": greedy})
        last_logits[f"logits_{i}"] = forward_logits(model, ids)[-1]

    prompt_text = tok.apply_chat_template(SMOL_CHAT, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(prompt_text, add_special_tokens=False).input_ids
    templated = tok.apply_chat_template(SMOL_CHAT, tokenize=True, add_generation_prompt=True)
    templated = templated["input_ids"] if hasattr(templated, "keys") else templated
    if list(templated) != chat_ids:
        raise RuntimeError("apply_chat_template(tokenize=True) disagrees with encoding its text")
    chat_greedy = checked_greedy(model, chat_ids, SMOL_NEW_TOKENS, {eos}, eos)
    reply = tok.decode(chat_greedy, skip_special_tokens=True)
    log(f"SmolLM2 chat reply {chat_greedy} = {reply!r}")

    write_json(
        out / "greedy.json",
        {
            "prompts": prompts,
            "chat": {
                "messages": SMOL_CHAT,
                "prompt_text": prompt_text,
                "prompt_ids": chat_ids,
                "greedy_ids": chat_greedy,
                "reply": reply,
            },
        },
    )
    save_tensors(out / "last_logits.safetensors", last_logits)

    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in TOKENIZER_CASES]
    write_json(out / "tokenizer_cases.json", cases)
    write_json(
        out / "tokenizer_meta.json",
        {
            "bos_token": tok.bos_token,
            "bos_token_id": tok.bos_token_id,
            "eos_token": tok.eos_token,
            "eos_token_id": tok.eos_token_id,
            "chat_template": tok.chat_template,
        },
    )
    write_dequant_rows(out)
    return tok.chat_template


def write_dequant_rows(out: Path) -> None:
    """First two rows, dequantized by gguf-py, of one tensor per GGML type."""
    reader = gguf.GGUFReader(str(smollm2_path()))
    picked = {}
    for t in reader.tensors:
        picked.setdefault(t.tensor_type, t)
    rows, index = {}, []
    for qtype, t in sorted(picked.items(), key=lambda kv: int(kv[0])):
        data = np.asarray(t.data)
        if data.ndim == 1:  # a vector is a single row
            data = data[None, :]
        head = gguf.quants.dequantize(data[:2], qtype).astype(np.float32)
        head = head.reshape(-1, int(t.shape[0]))  # rows of ne0 elements
        rows[t.name] = head
        index.append(
            {
                "name": t.name,
                "ggml_type": qtype.name,
                "shape": [int(n) for n in t.shape],
                "stored_shape": list(head.shape),
            }
        )
    save_tensors(out / "dequant_rows.safetensors", rows)
    write_json(out / "dequant_rows.json", index)


def gguf_chat_template() -> str:
    reader = gguf.GGUFReader(str(smollm2_path()))
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


# --------------------------------------------------------------------------
# chat templates
# --------------------------------------------------------------------------

TEMPLATE_TOKENS = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>"},
    "chatml": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
}

TEMPLATE_KWARGS = {"llama3": {"date_string": "26 Jul 2024"}, "mistral": {}, "chatml": {}}

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "user", "content": "Hello!"}], False),
    (
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name a prime number."},
        ],
        True,
    ),
    (
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour !"},
        ],
        False,
    ),
    ([{"role": "user", "content": "Ünïcödé: café, 東京, 😀👩‍🔬, and ñ"}], True),
    ([{"role": "user", "content": "  padded with spaces and a newline  \n"}], True),
    (
        [
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second, without a reply in between"},
        ],
        True,
    ),
    ([{"role": "assistant", "content": "I speak first."}], False),
]


def template_tokenizer(tok: tokenizers.Tokenizer, name: str, template: str):
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        chat_template=template,
        **TEMPLATE_TOKENS[name],
    )
    return fast


def write_chat_template_fixtures(tok: tokenizers.Tokenizer, chatml: str) -> None:
    out = FIXTURES / "chat_templates"
    (out / "chatml.jinja").write_text(chatml, encoding="utf-8")
    templates = {name: (out / f"{name}.jinja").read_text(encoding="utf-8") for name in TEMPLATE_TOKENS}
    write_json(out / "tokens.json", TEMPLATE_TOKENS)

    cases = []
    for name, template in templates.items():
        renderer = template_tokenizer(tok, name, template)
        for messages, add_gen in CONVERSATIONS:
            kwargs = TEMPLATE_KWARGS[name]
            case = {
                "template": name,
                "messages": messages,
                "add_generation_prompt": add_gen,
                "kwargs": kwargs,
            }
            try:
                case["rendered"] = renderer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_gen, **kwargs
                )
            except jinja2.TemplateError as err:
                case["error"] = True
                case["error_message"] = str(err)
            cases.append(case)
    write_json(out / "cases.json", cases)
    n_err = sum(1 for c in cases if c.get("error"))
    log(f"chat templates: {len(cases)} cases ({n_err} raise)")


# --------------------------------------------------------------------------
# GGUF block dequantization references
# --------------------------------------------------------------------------

QUANT_BLOCKS = 4
# Byte offsets of the f16 scale fields in one block, and whether they may be
# negative (llama.cpp writes signed d for these, unsigned d/dmin for K-quants).
F16_FIELDS = {
    "Q4_0": [(0, True)],
    "Q4_1": [(0, True), (2, True)],
    "Q8_0": [(0, True)],
    "Q4_K": [(0, False), (2, False)],
    "Q6_K": [(208, True)],
}


def moderate_f16(rng: np.random.RandomState, signed: bool) -> bytes:
    magnitude = 10.0 ** rng.uniform(-3.0, 0.0)
    sign = -1.0 if signed and rng.rand() < 0.5 else 1.0
    return np.float16(sign * magnitude).tobytes()


def write_quant_blocks() -> None:
    rng = np.random.RandomState(4242)
    tensors = {}
    for type_name, fields in F16_FIELDS.items():
        qtype = gguf.GGMLQuantizationType[type_name]
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        raw = bytearray(rng.randint(0, 256, size=QUANT_BLOCKS * type_size, dtype=np.uint8).tobytes())
        for b in range(QUANT_BLOCKS):
            for offset, signed in fields:
                at = b * type_size + offset
                raw[at : at + 2] = moderate_f16(rng, signed)
        data = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(QUANT_BLOCKS, type_size)
        values = gguf.quants.dequantize(data, qtype).astype(np.float32)
        if values.shape != (QUANT_BLOCKS, block_size) or not np.isfinite(values).all():
            raise RuntimeError(f"{type_name}: bad dequantization {values.shape}")
        tensors[f"{type_name}_bytes"] = data
        tensors[f"{type_name}_f32"] = values

    elements = 32
    floats = rng.standard_normal((QUANT_BLOCKS, elements)).astype(np.float32)
    as_f16 = floats.astype(np.float16)
    as_bf16 = (floats.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact bf16 values
    for type_name, half in (("F16", as_f16.view(np.uint16)), ("BF16", as_bf16)):
        data = half.astype("<u2").view(np.uint8).reshape(QUANT_BLOCKS, 2 * elements)
        values = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]).astype(np.float32)
        tensors[f"{type_name}_bytes"] = data
        tensors[f"{type_name}_f32"] = values.reshape(QUANT_BLOCKS, elements)
    save_tensors(FIXTURES / "gguf" / "quant_blocks.safetensors", tensors)
    log(f"gguf: {len(tensors) // 2} quantization types")


# --------------------------------------------------------------------------


def main() -> None:
    check_versions()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)

    smollm2_path()
    write_quant_blocks()
    chatml_from_transformers = write_smollm2_fixtures()
    chatml = gguf_chat_template()
    if chatml != chatml_from_transformers:
        raise RuntimeError("GGUF chat template differs from the one transformers loaded")

    tok = train_tiny_tokenizer()
    write_chat_template_fixtures(tok, chatml)
    for spec in TINY_SPECS:
        write_tiny_model(spec, tok, chatml)
    log("done")


if __name__ == "__main__":
    main()
