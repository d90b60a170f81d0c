"""The genome ↔ recipe contract every search space follows, and the sources it is built over.

A strategy only ever sees a box of real numbers; a SearchSpace turns any
point of that box into a Recipe (pure data), deterministically. The box and
the dimension names are fixed when the space is built, so a run can store
``describe()`` and refuse to resume over a different space.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import CheckpointError, ConfigError
from evomerge.recipe.model import Recipe

DEFAULT_LAYER_PREFIX = "model.layers"


@dataclass
class Sources:
    """The models a space merges: an optional base (θ₀ of task vectors) and the source models.

    ``labels`` are the short names used in dimension names (``weight[math_a]``);
    by default each model's folder name, made unique. ``num_layers`` (model path
    → layer count) skips reading the checkpoints; otherwise counts and layer
    tensor prefixes are read once from the checkpoint headers.
    """

    base: str | None
    models: list[str]
    labels: list[str] | None = None
    num_layers: dict[str, int] | None = None
    _layers: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _prefix: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.base = None if self.base is None else str(self.base)
        self.models = [str(m) for m in self.models]
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"sources.models lists a model twice: {self.models}")
        if self.labels is None:
            self.labels = _unique_labels([Path(m).name or m for m in self.models])
        elif len(self.labels) != len(self.models) or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"sources.labels must be {len(self.models)} distinct names, got {self.labels}")
        if self.num_layers:
            self._layers.update({str(k): int(v) for k, v in self.num_layers.items()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sources:
        """``{base: path, models: [paths] | {label: path}}``, the form run configs use."""
        if not isinstance(data, dict) or "models" not in data:
            raise ConfigError("sources: expected a mapping with 'models' (a list of paths or {label: path})")
        models = data["models"]
        if isinstance(models, dict):
            return cls(base=data.get("base"), models=[str(p) for p in models.values()],
                       labels=[str(k) for k in models])
        if not isinstance(models, list):
            raise ConfigError("sources.models: expected a list of paths or a mapping {label: path}")
        return cls(base=data.get("base"), models=[str(p) for p in models], labels=data.get("labels"))

    # ---- lookups ---------------------------------------------------------------------------
    def label(self, model: str) -> str:
        """The short name of a source model (the base is 'base')."""
        assert self.labels is not None
        if model == self.base:
            return "base"
        return self.labels[self.models.index(model)]

    def resolve(self, ref: str | int, *, key: str) -> str:
        """A model path from an index into ``models``, a label, a path, or 'base'; errors name ``key``."""
        assert self.labels is not None
        if isinstance(ref, int):
            if not 0 <= ref < len(self.models):
                raise ConfigError(f"{key}: model index {ref} is outside 0..{len(self.models) - 1}")
            return self.models[ref]
        if ref == "base" and self.base is not None:
            return self.base
        if ref in self.labels:
            return self.models[self.labels.index(ref)]
        if ref in self.models or ref == self.base:
            return ref
        raise ConfigError(f"{key}: '{ref}' is not a source model (labels: {', '.join(self.labels)})")

    def layers(self, model: str) -> int:
        """Number of decoder layers of ``model`` (config, else tensor names)."""
        if model not in self._layers:
            self._read(model)
        return self._layers[model]

    def layer_prefix(self, model: str) -> str:
        """The name prefix of the numbered blocks (``model.layers``), for per-layer filters."""
        if model not in self._prefix:
            if self.num_layers and model in self.num_layers and not Path(model).exists():
                return DEFAULT_LAYER_PREFIX
            self._read(model)
        return self._prefix[model]

    def _read(self, model: str) -> None:
        from evomerge.io.checkpoint import Checkpoint
        from evomerge.recipe.layout import place_of

        with Checkpoint.open(model) as ckpt:
            n = ckpt.num_layers
            prefixes = {p.prefix for p in map(place_of, ckpt.names) if p.layer is not None}
        if not n:
            raise CheckpointError(f"{model}: found no numbered decoder layers; a search space needs a layered model")
        self._layers.setdefault(model, n)
        self._prefix[model] = next(iter(prefixes)) if len(prefixes) == 1 else DEFAULT_LAYER_PREFIX

    def describe(self) -> dict[str, Any]:
        return {"base": self.base, "models": list(self.models), "labels": list(self.labels or [])}


def _unique_labels(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        label, k = name, 2
        while label in out:
            label, k = f"{name}_{k}", k + 1
        out.append(label)
    return out


class SearchSpace(ABC):
    """A box of genomes and its deterministic map to recipes.

    ``decode`` is pure: the same genome always gives the same recipe, it
    clips to the box first, and it never raises for a finite genome of the
    right length (every in-box point is a valid recipe).
    """

    kind: ClassVar[str]
    dim: int
    lower: np.ndarray
    upper: np.ndarray
    names: list[str]

    @abstractmethod
    def x0(self) -> np.ndarray:
        """The initial genome (the paper's initialisation for this space)."""

    @abstractmethod
    def decode(self, genome: np.ndarray) -> Recipe:
        """The recipe of ``genome`` (clipped to the box)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description: config, sources, box and names (stored with a run, diffed on resume)."""

    # ---- shared helpers ----------------------------------------------------------------------
    def _set_box(self, names: list[str], lower: Sequence[float], upper: Sequence[float]) -> None:
        if len(set(names)) != len(names):  # a bug in a space, not a user error
            raise AssertionError(f"duplicate dimension names in {type(self).__name__}")
        self.names = names
        self.dim = len(names)
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)

    def clip(self, genome: np.ndarray | Sequence[float]) -> np.ndarray:
        """``genome`` as a float array clipped to the box; a wrong length or NaN/inf raises ConfigError."""
        x = np.asarray(genome, dtype=float).reshape(-1)
        if x.shape[0] != self.dim:
            raise ConfigError(f"{self.kind} space: genome has {x.shape[0]} values, the space has {self.dim} "
                              "dimensions")
        if not np.all(np.isfinite(x)):
            bad = [self.names[i] for i in np.flatnonzero(~np.isfinite(x))[:3]]
            raise ConfigError(f"{self.kind} space: genome has non-finite values (e.g. at {', '.join(bad)})")
        return np.clip(x, self.lower, self.upper)

    def box_description(self) -> dict[str, Any]:
        return {"dim": self.dim, "names": list(self.names), "lower": [float(v) for v in self.lower],
                "upper": [float(v) for v in self.upper], "x0": [float(v) for v in self.x0()]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def choose_interval(x: float, k: int) -> int:
    """Index of the equal-width interval of [0, 1] holding ``x``: [0, 1/k) → 0, ..., [(k−1)/k, 1] → k − 1."""
    return min(math.floor(x * k), k - 1) if k > 1 else 0


def round_integer(x: float, low: int, high: int) -> int:
    """An integer dimension: the box is [low − ½, high + ½] so every integer gets an equal-width interval."""
    return min(max(math.floor(x + 0.5), low), high)
