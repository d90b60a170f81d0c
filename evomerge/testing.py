"""Tiny random Hugging Face checkpoints built on the fly, for tests, the demo and benchmarks.

Mirrors what mergekit's test-suite does: a few-layer Llama made locally, so no
test ever needs a model hub. A "family" is a base plus experts that are small
perturbations of it, which is the shape of real fine-tunes.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_llama_config(
    *,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 64,
    tie_word_embeddings: bool = False,
):
    """A transformers LlamaConfig small enough to build in milliseconds."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
    )


def save_tiny_llama(out_dir: str | Path, *, seed: int, config=None, base_dir: str | Path | None = None,
                    delta_scale: float = 0.02, dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny Llama to ``out_dir`` with ``save_pretrained``.

    With ``base_dir`` the model is that base plus Gaussian noise of relative size
    ``delta_scale`` per tensor (an "expert"); otherwise it is a fresh random init.
    """
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    config = config or tiny_llama_config()
    torch.manual_seed(seed)
    if base_dir is not None:
        model = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                noise = torch.randn(param.shape, generator=gen)
                param.add_(noise * delta_scale * (param.std() + 1e-3))
    else:
        model = LlamaForCausalLM(config)
    model.to(dtype).save_pretrained(out)
    return out


def tiny_llama_family(root: str | Path, *, n_experts: int = 3, config=None, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> tuple[Path, list[Path]]:
    """A base and ``n_experts`` experts fine-tuned-by-noise from it, under ``root``."""
    root = Path(root)
    base = save_tiny_llama(root / "base", seed=seed, config=config, dtype=dtype)
    experts = [
        save_tiny_llama(root / f"expert{k}", seed=seed + 1 + k, base_dir=base, dtype=dtype)
        for k in range(n_experts)
    ]
    return base, experts


TINY_WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "and", "then", "."]


def save_word_tokenizer(folder: str | Path, words: list[str] = TINY_WORDS) -> None:
    """A word-level tokenizer (ids below the tiny Llama's 64), saved beside the weights as a model's would be."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)


def llama_shapes(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                 tie_word_embeddings: bool = False) -> dict[str, tuple[int, ...]]:
    """Every weight name and shape of a Llama checkpoint with these dimensions (as transformers saves it)."""
    head_dim = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (intermediate, hidden),
            p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        })
    shapes["model.norm.weight"] = (hidden,)
    if not tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_header_only_checkpoint(folder: str | Path, shapes: dict[str, tuple[int, ...]], *,
                                 dtype: str = "BF16", config: dict | None = None) -> Path:
    """A safetensors checkpoint whose header is real and whose data is a hole (a sparse file): no weights.

    Enough for anything that reads headers only (planning a 70B search on a
    laptop); reading a tensor gives zeros.
    """
    import json
    import math
    import struct

    itemsize = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    return path


def write_plan_config(folder: str | Path, base: str, models: list[str], **runner: object) -> Path:
    """A minimal TIES run config over ``base`` + ``models`` with these runner settings, for ``evomerge plan``."""
    import yaml

    path = Path(folder) / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plan", "sources": {"base": base, "models": models}, "space": "ties",
        "objectives": [{"name": "score", "direction": "maximize"}], "budget": {"evaluations": 10},
        "runner": runner}))
    return path
