"""Layer-swap space (Bandarkar et al., arXiv 2410.01335): how many bottom and top layers to swap in.

Two experts fine-tuned from one base: A (the task expert, e.g. math) keeps
the middle layers; B (the language expert) gives its bottom ``k_bottom`` and
top ``k_top`` layers. The recipe is a passthrough ``slices`` stack, so it
plans and exports to mergekit as is. As with any passthrough stack, the
embeddings come with the first slice's model and the final norm and head
with the last slice's: B's when k_bottom (k_top) > 0, A's otherwise.

Both dimensions are integers: the box of k is [low − ½, high + ½] and a value
rounds half up, so every integer gets an interval of equal width. When
k_bottom + k_top exceeds the layer count (possible only with ranges wider
than the default [0, ⌊L/2⌋]), k_top is cut to L − k_bottom. The paper's
transition zones (averaged layers at the seams) are not part of this space.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.errors import ConfigError
from evomerge.recipe.model import Recipe, Slice, SliceSource
from evomerge.spaces.base import SearchSpace, Sources, round_integer
from evomerge.spaces.config import LayerSwapConfig


class LayerSwapSpace(SearchSpace):
    """Genome = [k_bottom, k_top] (rounded) → B[0:k_bottom] + A[k_bottom:L−k_top] + B[L−k_top:L]."""

    kind = "layer_swap"

    def __init__(self, config: LayerSwapConfig, sources: Sources) -> None:
        self.config = config
        self.sources = sources
        self.a = sources.resolve(config.expert_a, key="expert_a")
        self.b = sources.resolve(config.expert_b, key="expert_b")
        if self.a == self.b:
            raise ConfigError(f"expert_b: the same model as expert_a ({self.a}); swap layers between two experts")
        la, lb = sources.layers(self.a), sources.layers(self.b)
        if la != lb:
            raise ConfigError(f"expert_b: {lb} layers, but expert_a has {la}; layer swapping needs equal depths")
        self.num_layers = L = la
        default = (0, L // 2)
        self.k_ranges: dict[str, tuple[int, int]] = {}
        x0 = []
        for key, given, init in (("k_bottom", config.k_bottom, config.k_bottom_init),
                                 ("k_top", config.k_top, config.k_top_init)):
            lo, hi = given if given is not None else default
            if hi > L:
                raise ConfigError(f"{key}: [{lo}, {hi}] goes past the {L} layers of the experts")
            value = (lo + hi) // 2 if init is None else init
            if not lo <= value <= hi:
                raise ConfigError(f"{key}_init: {value} is outside [{lo}, {hi}]")
            self.k_ranges[key] = (lo, hi)
            x0.append(float(value))
        names = list(self.k_ranges)
        self._set_box(names, [lo - 0.5 for lo, _ in self.k_ranges.values()],
                      [hi + 0.5 for _, hi in self.k_ranges.values()])
        self._x0 = np.asarray(x0, dtype=float)

    def x0(self) -> np.ndarray:
        """``k_bottom_init``/``k_top_init`` (default: the middle of each range, rounded down)."""
        return self._x0.copy()

    def ks(self, genome: np.ndarray) -> tuple[int, int]:
        """(k_bottom, k_top) of ``genome``."""
        x = self.clip(genome)
        kb = round_integer(float(x[0]), *self.k_ranges["k_bottom"])
        kt = round_integer(float(x[1]), *self.k_ranges["k_top"])
        return kb, min(kt, self.num_layers - kb)

    def decode(self, genome: np.ndarray) -> Recipe:
        kb, kt = self.ks(genome)
        L = self.num_layers
        parts = [(self.b, 0, kb), (self.a, kb, L - kt), (self.b, L - kt, L)]
        slices = [Slice(sources=[SliceSource(model=m, layer_range=(lo, hi))]) for m, lo, hi in parts if hi > lo]
        return Recipe(slices=slices, merge_method="passthrough", dtype=self.config.dtype)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.model_dump(mode="json"), "sources": self.sources.describe(),
                "expert_a": self.a, "expert_b": self.b, "num_layers": self.num_layers, **self.box_description()}
