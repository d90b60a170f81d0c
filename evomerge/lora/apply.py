"""LoRA fusions written into a resident base model, and exported as a checkpoint or a fused adapter.

For search, the base model is loaded once and a copy of every adapted weight
W0 is kept; a candidate (α, β) is applied by writing W0 + scaling·B·A into the
model's parameters in place (DESIGN.md's in-place materializer: no disk I/O
and no model construction per candidate). Export goes through the same fusion:
``export_checkpoint`` streams a plain transformers folder (loads with
``AutoModelForCausalLM``), ``export_adapter`` writes the fused rank-r PEFT
adapter (loads with ``PeftModel.from_pretrained``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from evomerge.errors import ConfigError
from evomerge.io import Checkpoint, ShardedWriter, atomic_output_dir, copy_model_files
from evomerge.lora.adapter import CONFIG_FILE, PEFT_PREFIX, WEIGHTS_FILE, LoraAdapter, check_same_family
from evomerge.lora.fusion import apply_delta, fuse_pair


def open_adapters(base: str | Path, adapters: Sequence[str | Path]) -> list[LoraAdapter]:
    """Open ``adapters`` and check them against each other and against the ``base`` checkpoint's headers."""
    opened = [LoraAdapter.open(p) for p in adapters]
    check_same_family(opened)
    with Checkpoint.open(base) as ckpt:
        shapes = {name: ckpt.info(name).shape for name in ckpt.names}
    for adapter in opened:
        adapter.check_base(shapes, str(base))
        adapter.check_base_path(base)
    return opened


def fuse(adapters: Sequence[LoraAdapter], alpha: Sequence[float],
         beta: Sequence[float]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module path → fused (A, B) of every adapted module (float32)."""
    if not len(alpha) == len(beta) == len(adapters):
        raise ConfigError(f"a LoRA fusion needs one alpha and one beta per adapter ({len(adapters)}), got "
                          f"{len(alpha)} and {len(beta)}")
    out = {}
    for module in adapters[0].pairs:
        pairs = [ad.pairs[module] for ad in adapters]
        out[module] = fuse_pair([p.a.float() for p in pairs], [p.b.float() for p in pairs], alpha, beta)
    return out


class ResidentLoraMerge:
    """A base model held once with its adapters; ``apply(α, β)`` writes a fusion into it in place."""

    def __init__(self, base: str | Path, adapters: Sequence[str | Path], *, device: str = "cpu") -> None:
        from evomerge.models import load_model

        self.base = Path(base)
        self.adapters = open_adapters(base, adapters)
        self.scaling = self.adapters[0].scaling
        self.model, self.tokenizer = load_model(self.base, device=device)
        params = dict(self.model.named_parameters())
        self._params: dict[str, torch.nn.Parameter] = {}
        self._w0: dict[str, torch.Tensor] = {}
        for module, pair in self.adapters[0].pairs.items():
            param = params.get(pair.weight_name)
            if param is None:  # the checkpoint has it (checked) but the loaded model does not: a tied weight
                raise ConfigError(f"{self.base}: the loaded model has no parameter '{pair.weight_name}' "
                                  "(tied to another?); it cannot take a LoRA update")
            self._params[module] = param
            self._w0[module] = param.detach().clone()
        self._device = torch.device(device)

    @property
    def paths(self) -> list[str]:
        return [str(a.path) for a in self.adapters]

    @torch.no_grad()
    def apply(self, alpha: Sequence[float], beta: Sequence[float]) -> None:
        """Write W0 + scaling·B·A of the fusion (α, β) into every adapted weight of the model."""
        for module, (a, b) in fuse(self.adapters, alpha, beta).items():
            param = self._params[module]
            param.copy_(apply_delta(self._w0[module], a.to(self._device), b.to(self._device), self.scaling))

    @torch.no_grad()
    def apply_update_sum(self, weights: Sequence[float]) -> None:
        """Write W0 + Σ w_i·scaling·B_i·A_i: task arithmetic on the adapters' updates, no cross terms.

        Not Evo-Merging's fusion (see ``fusion``): the baseline it is compared with, a rank-N·r update.
        """
        if len(weights) != len(self.adapters):
            raise ConfigError(f"one weight per adapter ({len(self.adapters)}), got {len(weights)}")
        for module, param in self._params.items():
            w = self._w0[module]
            for ad, wi in zip(self.adapters, weights, strict=True):
                pair = ad.pairs[module]
                w = w + float(wi) * (pair.b.float() @ pair.a.float()).to(self._device) * self.scaling
            param.copy_(w)

    @torch.no_grad()
    def restore(self) -> None:
        """Put the base weights back."""
        for module, param in self._params.items():
            param.copy_(self._w0[module])


def export_checkpoint(base: str | Path, adapters: Sequence[str | Path], alpha: Sequence[float],
                      beta: Sequence[float], out: str | Path, *, overwrite: bool = False) -> Path:
    """The base with the fusion folded in, as a plain transformers folder (weights, config, tokenizer)."""
    opened = open_adapters(base, adapters)
    fused = {f"{module}.weight": ab for module, ab in fuse(opened, alpha, beta).items()}
    scaling = opened[0].scaling
    with Checkpoint.open(base) as ckpt, atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        layout = [(name, ckpt.info(name).shape, ckpt.info(name).dtype) for name in ckpt.names]
        with ShardedWriter(tmp, layout) as writer:
            for name in ckpt.names:
                w = ckpt.get(name)
                if name in fused:
                    a, b = fused[name]
                    w = apply_delta(w.float(), a, b, scaling).to(w.dtype)
                writer.write(name, w)
        copy_model_files(ckpt.folder, tmp)
    return Path(out)


def export_adapter(base: str | Path, adapters: Sequence[str | Path], alpha: Sequence[float],
                   beta: Sequence[float], out: str | Path, *, overwrite: bool = False) -> Path:
    """The fusion as one PEFT LoRA folder: the first adapter's config, the fused A and B (rank r)."""
    from safetensors.torch import save_file

    opened = open_adapters(base, adapters)
    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in fuse(opened, alpha, beta).items():
        dtype = opened[0].pairs[module].a.dtype
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a.to(dtype).contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b.to(dtype).contiguous()
    config = dict(opened[0].config)
    with atomic_output_dir(Path(out), overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "evomerge_fusion.json").write_text(json.dumps(
            {"method": "evo_merging (arXiv 2509.12951): A = sum beta_i topk(A_i, alpha_i), B = sum beta_i B_i",
             "adapters": [str(a.path) for a in opened], "alpha": [float(x) for x in alpha],
             "beta": [float(x) for x in beta]}, indent=2) + "\n", encoding="utf-8")
    return Path(out)
