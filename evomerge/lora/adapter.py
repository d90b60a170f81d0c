"""PEFT LoRA adapters read without ``peft``: ``adapter_config.json`` + ``adapter_model.safetensors``.

A LoRA adapter (Hu et al., arXiv 2106.09685) adds ``scaling · B · A`` to a base
weight ``W0`` of shape [out, in], with A: [r, in], B: [out, r] and scaling
``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA). PEFT stores the pair
of module ``M`` as ``base_model.model.M.lora_A.weight`` / ``...lora_B.weight``.
Opening checks what can go wrong before a long search starts, and every error
names the file and the tensor: a missing half of a pair, a rank that is not the
config's, a module the base does not have or whose shape differs, adapters that
do not share their base, target modules, rank or scaling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import CheckpointError
from evomerge.io.json_object import read_json_object
from evomerge.io.safetensors_format import read_header

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<half>[AB])\.weight$")
# PEFT options that change what the saved tensors mean; this reader handles plain LoRA only.
_UNSUPPORTED = {"use_dora": True, "fan_in_fan_out": True}


@dataclass(frozen=True)
class LoraPair:
    """One adapted module: ``module`` is the base's module path (``model.layers.0.self_attn.q_proj``)."""

    module: str
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]

    @property
    def weight_name(self) -> str:
        """The base tensor the pair adds to."""
        return f"{self.module}.weight"


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA folder held in memory (adapters are small: ~0.1-1 % of their base)."""

    path: Path
    config: dict[str, Any]
    rank: int
    lora_alpha: float
    scaling: float
    base_model: str | None
    target_modules: tuple[str, ...] | str
    pairs: dict[str, LoraPair]  # by module path, in file-independent sorted order

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @classmethod
    def open(cls, path: str | Path) -> LoraAdapter:
        """Read and check one adapter folder; errors name the file and the tensor."""
        path = Path(path).expanduser()
        config = _read_config(path)
        rank, lora_alpha = config.get("r"), config.get("lora_alpha")
        if not isinstance(rank, int) or rank <= 0:
            raise CheckpointError(f"{path / CONFIG_FILE}: 'r' must be a positive integer, got {rank!r}")
        if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool):
            raise CheckpointError(f"{path / CONFIG_FILE}: 'lora_alpha' must be a number, got {lora_alpha!r}")
        scaling = lora_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        targets = config.get("target_modules")
        if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
            targets = tuple(sorted(targets))
        elif not isinstance(targets, str):
            raise CheckpointError(f"{path / CONFIG_FILE}: 'target_modules' must be a list of names or a regex, "
                                  f"got {targets!r}")
        pairs = _read_pairs(path / WEIGHTS_FILE, rank)
        for module in pairs:
            if not _targeted(module, targets):
                raise CheckpointError(f"{path / WEIGHTS_FILE}: tensor {PEFT_PREFIX}{module}.lora_A.weight adapts "
                                      f"'{module}', which target_modules {targets!r} does not name")
        base = config.get("base_model_name_or_path")
        return cls(path=path, config=config, rank=rank, lora_alpha=float(lora_alpha), scaling=float(scaling),
                   base_model=str(base) if base is not None else None, target_modules=targets, pairs=pairs)

    def check_base(self, names_shapes: dict[str, tuple[int, ...]], where: str) -> None:
        """Every pair must land on a 2-D tensor of the base (``where``: its path) with matching shape."""
        for pair in self.pairs.values():
            key = f"{PEFT_PREFIX}{pair.module}.lora_A.weight"
            shape = names_shapes.get(pair.weight_name)
            if shape is None:
                raise CheckpointError(f"{self.weights_file}: tensor {key} adapts '{pair.module}', but the base "
                                      f"{where} has no tensor '{pair.weight_name}'; is this adapter for another "
                                      "base model?")
            expected = (pair.b.shape[0], pair.a.shape[1])
            if tuple(shape) != expected:
                raise CheckpointError(f"{self.weights_file}: tensors {PEFT_PREFIX}{pair.module}.lora_B/lora_A make "
                                      f"an update of shape {expected}, but the base {where} has "
                                      f"'{pair.weight_name}' of shape {tuple(shape)}; the adapter does not "
                                      "belong to this base")

    def check_base_path(self, base: str | Path) -> None:
        """When the adapter's declared base is a folder here, it must be the merge's base folder."""
        if self.base_model is None:
            return
        declared = Path(self.base_model).expanduser()
        if declared.is_dir() and Path(base).is_dir() and declared.resolve() != Path(base).resolve():
            raise CheckpointError(f"{self.path / CONFIG_FILE}: base_model_name_or_path is '{self.base_model}', "
                                  f"but the merge's base is {base}; LoRA updates only make sense on the base "
                                  "they were trained on")


def check_same_family(adapters: Sequence[LoraAdapter]) -> None:
    """Adapters merged together must share base, adapted modules, rank and scaling (the fused A, B need it)."""
    if not adapters:
        raise CheckpointError("no LoRA adapters given; a LoRA merge needs at least one")
    first = adapters[0]
    for other in adapters[1:]:
        here = f"{other.path / CONFIG_FILE} vs {first.path / CONFIG_FILE}"
        if _norm_base(other.base_model) != _norm_base(first.base_model):
            raise CheckpointError(f"{here}: base_model_name_or_path differs ('{other.base_model}' vs "
                                  f"'{first.base_model}'); adapters of different bases cannot be merged")
        if other.target_modules != first.target_modules or set(other.pairs) != set(first.pairs):
            only = sorted(set(other.pairs) ^ set(first.pairs))
            raise CheckpointError(f"{here}: the adapters do not adapt the same modules (target_modules "
                                  f"{other.target_modules!r} vs {first.target_modules!r}"
                                  f"{'; e.g. ' + only[0] + ' in only one' if only else ''})")
        if other.rank != first.rank or other.scaling != first.scaling:
            raise CheckpointError(f"{here}: rank/scaling differ (r {other.rank}, scaling {other.scaling:g} vs "
                                  f"r {first.rank}, scaling {first.scaling:g}); A = Σβ·A_i, B = Σβ·B_i needs "
                                  "equal ranks and one scaling")


def _norm_base(base: str | None) -> str | None:
    if base is None:
        return None
    p = Path(base).expanduser()
    return str(p.resolve()) if p.exists() else base.rstrip("/")


def _targeted(module: str, targets: tuple[str, ...] | str) -> bool:
    """PEFT's matching: a regex must match the whole module path; a name its last components."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such LoRA adapter folder")
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; a PEFT LoRA adapter folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    config = read_json_object(file)
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise CheckpointError(f"{file}: peft_type is {config.get('peft_type')!r}; only LORA adapters are merged here")
    for key, bad in _UNSUPPORTED.items():
        if config.get(key) == bad:
            raise CheckpointError(f"{file}: {key}: {bad} is not supported (plain LoRA pairs only)")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise CheckpointError(f"{file}: a non-empty {key} (per-module ranks/alphas) is not supported")
    return config


def _read_pairs(file: Path, rank: int) -> dict[str, LoraPair]:
    if not file.is_file():
        legacy = file.with_name("adapter_model.bin")
        hint = f" (found {legacy.name}: convert it to safetensors)" if legacy.is_file() else ""
        raise CheckpointError(f"{file}: missing{hint}")
    header = read_header(file)  # corrupt or truncated files are reported by path, before any read
    halves: dict[str, dict[str, str]] = {}
    for entry in header.entries:
        m = _KEY.match(entry.name)
        if m is None:
            raise CheckpointError(f"{file}: tensor {entry.name!r} is not a LoRA A/B weight "
                                  f"('{PEFT_PREFIX}<module>.lora_A.weight'); DoRA, biases and modules_to_save "
                                  "are not supported")
        if len(entry.shape) != 2:
            raise CheckpointError(f"{file}: tensor {entry.name!r} has shape {entry.shape}; LoRA factors are 2-D")
        halves.setdefault(m["module"], {})[m["half"]] = entry.name
    if not halves:
        raise CheckpointError(f"{file}: holds no LoRA tensors")
    from safetensors import safe_open

    pairs: dict[str, LoraPair] = {}
    with safe_open(str(file), framework="pt", device="cpu") as handle:
        for module in sorted(halves):
            got = halves[module]
            for half, other in (("A", "B"), ("B", "A")):
                if half not in got:
                    raise CheckpointError(f"{file}: tensor {PEFT_PREFIX}{module}.lora_{half}.weight is missing "
                                          f"(its lora_{other} is there); the adapter is incomplete")
            a, b = handle.get_tensor(got["A"]), handle.get_tensor(got["B"])
            if a.shape[0] != rank or b.shape[1] != rank:
                raise CheckpointError(f"{file}: tensors {got['A']} {tuple(a.shape)} and {got['B']} "
                                      f"{tuple(b.shape)} do not have the config's rank r = {rank} "
                                      "(A must be [r, in], B [out, r])")
            for name, t in ((got["A"], a), (got["B"], b)):
                if not torch.isfinite(t).all():
                    raise CheckpointError(f"{file}: tensor {name} holds NaN or inf values")
            pairs[module] = LoraPair(module, a, b)
    return pairs
