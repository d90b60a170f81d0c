"""Hand-written PEFT LoRA folders over a tiny random Llama: the adapters these tests know exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

PREFIX = "base_model.model."
ZOO = Path(__file__).resolve().parents[2] / "zoo" / "tinylm"


def base_shapes(base: Path) -> dict[str, tuple[int, ...]]:
    from evomerge.io import Checkpoint

    with Checkpoint.open(base) as ckpt:
        return {n: ckpt.info(n).shape for n in ckpt.names}


def adapter_tensors(base: Path, *, rank: int = 2, targets: Sequence[str] = ("q_proj", "v_proj"),
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Random A [r, in] and non-zero B [out, r] for every targeted linear weight of ``base``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(base_shapes(base).items()):
        module = name.removesuffix(".weight")
        if len(shape) != 2 or not any(module.endswith("." + t) for t in targets):
            continue
        out[f"{PREFIX}{module}.lora_A.weight"] = torch.randn((rank, shape[1]), generator=gen) * 0.3
        out[f"{PREFIX}{module}.lora_B.weight"] = torch.randn((shape[0], rank), generator=gen) * 0.3
    return out


def write_adapter(folder: Path, base: Path, *, rank: int = 2, lora_alpha: float = 4,
                  targets: Sequence[str] = ("q_proj", "v_proj"), seed: int = 0,
                  tensors: dict[str, torch.Tensor] | None = None, **config_extra: object) -> Path:
    """A PEFT-format LoRA folder (adapter_config.json + adapter_model.safetensors) for ``base``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = adapter_tensors(base, rank=rank, targets=targets, seed=seed) if tensors is None else tensors
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": lora_alpha,
              "target_modules": list(targets), "base_model_name_or_path": str(base), "bias": "none",
              "fan_in_fan_out": False, "lora_dropout": 0.0, "use_rslora": False, "use_dora": False,
              "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": True, "inference_mode": True,
              **config_extra}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder
