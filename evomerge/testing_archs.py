"""Tiny random model families of many architectures, built from transformers' config classes (no downloads).

Each family is a base and experts that are the base plus small Gaussian noise
(the shape of real fine-tunes), saved with ``save_pretrained`` (so the
checkpoints carry the names transformers writes, e.g. Mixtral's per-expert
``block_sparse_moe.experts.N.w1``) and a small word-level tokenizer, plus a
perplexity task over texts in that vocabulary. Used by the architecture test
matrix and ``bench/arch_matrix.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 64
_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_COMMON = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 128, **_TOKENS}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


def _config(class_name: str, **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers

        return getattr(transformers, class_name)(**kwargs)

    return make


# name -> (config factory, transformers config class name); README order.
ARCHS: dict[str, Callable[[], Any]] = {
    "llama": _config("LlamaConfig", **_COMMON),
    "llama-tied": _config("LlamaConfig", **_COMMON, tie_word_embeddings=True),
    "mistral": _config("MistralConfig", **_COMMON),
    "qwen2": _config("Qwen2Config", **_COMMON),
    "qwen3": _config("Qwen3Config", **_COMMON, head_dim=8),
    "gemma2": _config("Gemma2Config", **_COMMON, head_dim=8),
    "phi3": _config("Phi3Config", **_COMMON),
    "gpt2": _config("GPT2Config", n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128, **_TOKENS),
    "gpt_neox": _config("GPTNeoXConfig", **{k: v for k, v in _COMMON.items() if k != "num_key_value_heads"}),
    "mixtral": _config("MixtralConfig", **_COMMON, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": _config("Qwen2MoeConfig", **_COMMON, **_MOE, shared_expert_intermediate_size=32),
    "qwen3_moe": _config("Qwen3MoeConfig", **_COMMON, **_MOE, head_dim=8),
    "olmoe": _config("OlmoeConfig", **_COMMON, num_experts=4, num_experts_per_tok=2),
}


def available_archs() -> list[str]:
    """The architectures of ARCHS this transformers can build (OLMoE and the MoE configs are recent)."""
    out = []
    for name, make in ARCHS.items():
        try:
            make()
        except (AttributeError, TypeError):
            continue
        out.append(name)
    return out


def _words() -> list[str]:
    return [f"w{i}" for i in range(30)]  # 4 special + 30 words + 20 digit tokens = 54 <= VOCAB


def save_tokenizer(out: Path) -> None:
    from evomerge.zoo.tokenizer import build_tokenizer, to_transformers

    to_transformers(build_tokenizer(_words())).save_pretrained(out)


def write_perplexity_task(root: str | Path, *, n: int = 6, seed: int = 0) -> Path:
    """A perplexity task (train and test splits of ``n`` short texts) in the families' vocabulary."""
    root = Path(root)
    rng = random.Random(seed)
    words = _words()
    for split in ("train", "test"):
        with (root / f"texts.{split}.jsonl").open("w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(12))}) + "\n")
    task = root / "perplexity.yaml"
    task.write_text("name: ppl\nkind: perplexity\nbatch_size: 8\n"
                    "data: {train: texts.train.jsonl, test: texts.test.jsonl}\n")
    return task


def save_model(model: Any, out: Path) -> Path:
    model.save_pretrained(out)
    save_tokenizer(out)
    return out


def tiny_family(arch: str, root: str | Path, *, n_experts: int = 3, seed: int = 0, delta_scale: float = 0.05,
                config_overrides: dict[str, Any] | None = None) -> tuple[Path, list[Path]]:
    """A base of architecture ``arch`` and ``n_experts`` noisy fine-tunes of it, under ``root``."""
    from transformers import AutoModelForCausalLM

    root = Path(root)
    config = ARCHS[arch]()
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    base = save_model(model, root / "base")
    experts = []
    for k in range(n_experts):
        expert = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed + 1 + k)
        with torch.no_grad():
            for param in expert.parameters():
                noise = torch.randn(param.shape, generator=gen)
                param.add_(noise * delta_scale * (param.std() + 1e-3))
        experts.append(save_model(expert, root / f"expert{k}"))
    return base, experts
