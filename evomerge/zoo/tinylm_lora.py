"""LoRA experts of the tinylm base: one PEFT adapter per skill, for black-box LoRA merging.

Each adapter is trained with ``peft`` (the format the field exchanges: an
``adapter_config.json`` with ``peft_type: LORA`` and an
``adapter_model.safetensors`` with PEFT's key names) on exactly the data stream
its full-fine-tune sibling saw (same generator, same seed, same replay share),
only with a LoRA's higher learning rate. Evo-Merging (Chen et al., arXiv
2509.12951) merges such adapters; LoraHub (Huang et al., arXiv 2307.13269)
before it. Reading the adapters back never needs ``peft`` (``evomerge.lora``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evomerge.errors import ConfigError
from evomerge.zoo import languages as L
from evomerge.zoo.tasks import EXPERT_TASKS, held_out_keys, tinylm_splits
from evomerge.zoo.tinylm import Progress, TinyLMRecipe, _train, expert_example_source
from evomerge.zoo.tokenizer import BOS, EOS, PAD, build_tokenizer

LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyLoraRecipe:
    """Everything that determines the LoRA adapters' bytes, the base's recipe (``parent``) included."""

    parent: TinyLMRecipe = field(default_factory=TinyLMRecipe)
    rank: int = 8
    lora_alpha: int = 16  # scaling = lora_alpha / rank = 2
    target_modules: tuple[str, ...] = LLAMA_LINEAR
    steps: int = 300
    batch: int = 32
    lr: float = 1e-3  # 2e-3 also trains every skill, but moves the base ~1.5x further (measured)
    warmup: int = 20
    replay: float = 0.25
    # One LoRA init for every adapter (A from the same seed, B = 0), as adapters trained by one script are
    # (LoraHub's hub, arXiv 2307.13269); the data streams stay per skill. The fusion Σβ·A_i, Σβ·B_i assumes it.
    shared_init: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def tiny(cls) -> TinyLoraRecipe:
        """A seconds-long build over ``TinyLMRecipe.tiny()``'s base, for tests."""
        return cls(parent=TinyLMRecipe.tiny(), rank=2, lora_alpha=4, steps=2, batch=8)


def adapter_dir(expert: str) -> str:
    return f"lora_{expert}"


def build_tinylm_lora(folder: str | Path, recipe: TinyLoraRecipe | None = None, *,
                      progress: Progress | None = None) -> dict:
    """Train one LoRA per expert skill on ``folder/base`` and write ``folder/lora_<skill>/`` (PEFT folders).

    Returns build facts (loss curves, each adapter's update norm relative to the base weights it touches).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("the tinylm LoRA zoo is trained with peft: `pip install peft` "
                          "(it is in evomerge's dev extra); reading adapters does not need it") from None
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    recipe = recipe or TinyLoraRecipe()
    parent = recipe.parent
    folder = Path(folder)
    base_dir = folder / "base"
    torch.set_num_threads(1)
    held_out = held_out_keys(tinylm_splits(parent.split_sizes, parent.split_seed))
    raw_tok = build_tokenizer(L.vocabulary_words())  # the base's own tokenizer, rebuilt as the experts' build does
    vocab = raw_tok.get_vocab()
    bos, eos, pad = vocab[BOS], vocab[EOS], vocab[PAD]

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in raw_tok.encode_batch(texts, add_special_tokens=False)]

    facts: dict = {"recipe": recipe.to_dict()}
    for k, expert in enumerate(EXPERT_TASKS):
        seed = parent.seed * 1000 + 17 + k  # the full expert's seed: the same data stream
        rng = random.Random(seed)
        torch.manual_seed(parent.seed * 1000 + 17 if recipe.shared_init else seed)  # peft draws A from it
        model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        config = LoraConfig(r=recipe.rank, lora_alpha=recipe.lora_alpha, target_modules=list(recipe.target_modules),
                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        params = [p for p in model.parameters() if p.requires_grad]
        facts[f"{expert}_loss"] = _train(
            model, expert_example_source(rng, expert, parent, held_out, encode, bos, eos, replay=recipe.replay),
            steps=recipe.steps, batch=recipe.batch, lr=recipe.lr, min_lr=recipe.lr, warmup=recipe.warmup,
            weight_decay=0.0, group=parent.length_group, pad_id=pad, rng=rng, stage=f"lora_{expert}",
            progress=progress, params=params)
        facts[f"{expert}_rel_update_norm"] = _relative_update_norm(model, recipe.lora_alpha / recipe.rank)
        _save_adapter(model, folder / adapter_dir(expert), base_dir)
    return facts


@torch.no_grad()
def _relative_update_norm(peft_model, scaling: float) -> float:
    """‖scaling·B·A‖ / ‖W0‖ over every adapted weight: how far the adapter moves the base."""
    delta2 = base2 = 0.0
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            delta2 += float((scaling * b @ a).pow(2).sum())
            base2 += float(module.base_layer.weight.pow(2).sum())
    return math.sqrt(delta2 / base2) if base2 else 0.0


def _save_adapter(peft_model, out: Path, base_dir: Path) -> None:
    """PEFT's own save, then a byte-stable config: sorted target modules, the base as a portable path."""
    peft_model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["target_modules"] = sorted(config["target_modules"])
    config["base_model_name_or_path"] = _portable(base_dir)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _portable(path: Path) -> str:
    """The base's path relative to the repository root when it lies inside it (``zoo/tinylm/base``)."""
    from evomerge.zoo.build import REPO_ROOT

    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
