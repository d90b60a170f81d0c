"""Where a tensor sits in a transformer: before the layers, in layer i, or after.

Works from tensor names alone (``model.layers.3.mlp.up_proj.weight``), so it
serves any decoder whose blocks are numbered, not only Llama.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|layer))\.(?P<index>\d+)\.(?P<suffix>.+)$")
_PRE_MARKERS = ("embed", "wte", "wpe", "word_embeddings")


@dataclass(frozen=True)
class TensorPlace:
    """A tensor's position: ``layer`` is None for embeddings/norm/head."""

    name: str
    layer: int | None
    prefix: str = ""
    suffix: str = ""

    @property
    def is_pre(self) -> bool:
        return self.layer is None and any(m in self.name for m in _PRE_MARKERS)

    def renamed(self, layer: int) -> str:
        """The same tensor in another layer."""
        assert self.layer is not None
        return f"{self.prefix}.{layer}.{self.suffix}"


@functools.lru_cache(maxsize=1 << 16)
def place_of(name: str) -> TensorPlace:
    """Cached: a search plans every candidate over the same names (the result is immutable)."""
    m = _LAYER.match(name)
    if m is None:
        return TensorPlace(name=name, layer=None)
    return TensorPlace(name=name, layer=int(m["index"]), prefix=m["prefix"], suffix=m["suffix"])


def layer_tensors(names: list[str], layer: int) -> list[TensorPlace]:
    """The tensors of one layer, in checkpoint order."""
    return [p for p in map(place_of, names) if p.layer == layer]


def count_layers(names: list[str]) -> int:
    layers = {p.layer for p in map(place_of, names) if p.layer is not None}
    return max(layers) + 1 if layers else 0
