"""Data-flow space (Akiba et al., arXiv 2403.13187, "DFS"): which layers run, in which order, at which scale.

The paper's genome, exactly: the layers of models A, B, … are listed in
order (M layers in total) and the list is repeated r times, giving T = M·r
slots; slot k holds layer ``k mod M`` of that list. An indicator
I ∈ ℝ^T switches slot k on when I_k > 0; the layer path is the "on" slots
in slot order. Model A's first and last layers are pinned at the start and
the end of the path, outside the slots, and A's embeddings, final norm,
head and tokenizer are used.

Scaling (``scaling``):
* ``matrix`` (default, the paper's): W ∈ ℝ^{M×M}; W_ij scales the input of
  layer j when it follows layer i. T + M² dimensions.
* ``per_slot``: one scale per slot (the scale of that slot's input when it is
  on) plus one for the pinned last layer: 2T + 1 dimensions, the "collapsed"
  form of the released runtime format (one input scale per hop).
The first hop (A's first layer, right after the embeddings) always has scale 1.

Scales are bounded away from 0 (``scale_range``, default [0.1, 2]): a data-flow
model is exported by folding 1/Π scales into the weights.

Initialisation (x₀): A's layers of the first repetition on (but its first and
last, which the pins already provide), every other slot off, all scales
``scale_init`` (1): x₀ decodes to model A exactly. Slots start at
±``indicator_init`` so that a step of CMA's σ can flip them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.errors import ConfigError
from evomerge.recipe.model import Hop, ModelSpec, Recipe
from evomerge.spaces.base import SearchSpace, Sources
from evomerge.spaces.config import DFSConfig


class DFSSpace(SearchSpace):
    """Genome = indicator over M·r layer slots + scaling (M×M matrix or per slot) → a ``layer_path`` recipe."""

    kind = "dfs"

    def __init__(self, config: DFSConfig, sources: Sources) -> None:
        self.config = config
        self.sources = sources
        refs = config.models if config.models is not None else list(range(len(sources.models)))
        if not refs:
            raise ConfigError("sources.models: a data-flow space needs at least model A")
        self.models = [sources.resolve(r, key=f"models[{i}]") for i, r in enumerate(refs)]
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models: a model is listed twice: {self.models}")
        _check_foldable(self.models[0])
        self.layer_counts = [sources.layers(m) for m in self.models]
        if self.layer_counts[0] < 2:
            raise ConfigError(f"models[0]: model A ({self.models[0]}) has {self.layer_counts[0]} layer(s); "
                              "its first and last layers are pinned, so it needs at least 2")
        # the M distinct layers: (model path, layer index), A's first
        self.layers: list[tuple[str, int]] = [(m, i) for m, n in zip(self.models, self.layer_counts, strict=True)
                                              for i in range(n)]
        self.M = len(self.layers)
        self.r = config.repeats
        self.T = self.M * self.r
        self.first = 0  # A's first layer in ``layers``
        self.last = self.layer_counts[0] - 1  # A's last layer
        self._build_box()

    def _layer_name(self, i: int) -> str:
        model, layer = self.layers[i]
        return f"{self.sources.label(model)}.{layer}"

    def _build_box(self) -> None:
        c = self.config
        ilo, ihi = c.indicator_range
        slo, shi = c.scale_range
        names = [f"I[{self._layer_name(k % self.M)}]@r{k // self.M + 1}" for k in range(self.T)]
        lower, upper = [ilo] * self.T, [ihi] * self.T
        x0 = [-c.indicator_init] * self.T
        for k in range(self.first + 1, self.last):  # A's layers in repetition 1, between the pins
            x0[k] = c.indicator_init
        if c.scaling == "matrix":
            scale_names = [f"W[{self._layer_name(i)}->{self._layer_name(j)}]"
                           for i in range(self.M) for j in range(self.M)]
        else:
            scale_names = [f"s[{self._layer_name(k % self.M)}]@r{k // self.M + 1}" for k in range(self.T)]
            scale_names.append("s[end]")
        names += scale_names
        lower += [slo] * len(scale_names)
        upper += [shi] * len(scale_names)
        x0 += [c.scale_init] * len(scale_names)
        self._set_box(names, lower, upper)
        self._x0 = np.asarray(x0, dtype=float)

    # ---- the contract --------------------------------------------------------------------------
    def x0(self) -> np.ndarray:
        return self._x0.copy()

    def layer_path(self, genome: np.ndarray) -> list[tuple[int, float]]:
        """The decoded path as (index into ``layers``, input scale) pairs."""
        x = self.clip(genome)
        indicator, scales = x[: self.T], x[self.T:]
        on = [k for k in range(self.T) if indicator[k] > 0]
        path: list[tuple[int, float]] = [(self.first, 1.0)]
        for k in on:
            j = k % self.M
            path.append((j, self._scale(scales, path[-1][0], j, k)))
        path.append((self.last, self._scale(scales, path[-1][0], self.last, None)))
        return path

    def _scale(self, scales: np.ndarray, prev: int, cur: int, slot: int | None) -> float:
        if self.config.scaling == "matrix":
            return float(scales[prev * self.M + cur])
        return float(scales[self.T if slot is None else slot])

    def decode(self, genome: np.ndarray) -> Recipe:
        hops = [Hop(model=self.layers[i][0], layer=self.layers[i][1], scale=s) for i, s in self.layer_path(genome)]
        a = self.models[0]
        return Recipe(models=[ModelSpec(model=a)], merge_method="passthrough", base_model=a, layer_path=hops,
                      dtype=self.config.dtype)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.model_dump(mode="json"), "sources": self.sources.describe(),
                "models": list(self.models), "layer_counts": list(self.layer_counts), "M": self.M, "T": self.T,
                **self.box_description()}


def _check_foldable(model_a: str) -> None:
    """Refuse, before any budget is spent, an architecture whose layer paths cannot be folded exactly."""
    from pathlib import Path

    config_file = Path(model_a) / "config.json"
    if not config_file.is_file():  # a space over declared layer counts only (no checkpoint to probe)
        return
    from evomerge.io.json_object import read_json_object
    from evomerge.materialize.dataflow import check_foldable

    check_foldable(read_json_object(config_file), f"models[0] ({model_a})")
