"""The tensors a merge method works on (``MergeInputs``); the declarations are in ``spec``.

Importing this module imports torch: only the methods' tensor functions and
the materializers need it. ``ParamSpec``, ``MergeMethod`` and ``MergeFn`` are
re-exported from ``evomerge.merge.spec`` for the modules that import them here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.errors import MergeError
from evomerge.merge.spec import MergeFn, MergeMethod, ParamSpec

__all__ = ["MergeFn", "MergeInputs", "MergeMethod", "ParamSpec"]


class MergeInputs:
    """The tensors one output tensor is merged from.

    Either full source weights, or (for resident workers) precomputed task
    vectors; each view is derived on demand from the other, in float32, so a
    method asks for what its math is written in.
    """

    def __init__(
        self,
        name: str,
        base: torch.Tensor | None,
        sources: Sequence[torch.Tensor] | None = None,
        deltas: Sequence[torch.Tensor] | None = None,
        orders: Sequence[object | None] | None = None,
    ) -> None:
        """``orders``: per task vector, its precomputed source-only table (or None) for a resident worker's
        sparsifier: ``sparsify.MagnitudeOrder`` (TIES, breadcrumbs), ``RowRanks`` (DELLA), ``SourceNorm``
        (DARE); the result is the same without them."""
        if (sources is None) == (deltas is None):
            raise ValueError("give exactly one of sources or deltas")
        if deltas is not None and base is None:
            raise ValueError("task vectors need their base")
        self.name = name
        self.base = None if base is None else base.float()
        self._sources = None if sources is None else [t.float() for t in sources]
        self._deltas = None if deltas is None else [t.float() for t in deltas]
        self._orders = list(orders) if orders is not None and deltas is not None else None
        shapes = {tuple(t.shape) for t in (self._sources or self._deltas or [])}
        if self.base is not None:
            shapes.add(tuple(self.base.shape))
        if len(shapes) > 1:
            raise MergeError(f"tensor '{name}': shapes differ across sources: {sorted(shapes)}")

    def order(self, k: int):
        """Task vector ``k``'s precomputed source-only table (see ``__init__``), or None."""
        return self._orders[k] if self._orders is not None else None

    @property
    def n_sources(self) -> int:
        return len(self._sources if self._sources is not None else self._deltas)  # type: ignore[arg-type]

    @property
    def sources(self) -> list[torch.Tensor]:
        if self._sources is None:
            assert self.base is not None and self._deltas is not None
            self._sources = [self.base + d for d in self._deltas]
        return self._sources

    @property
    def deltas(self) -> list[torch.Tensor]:
        if self._deltas is None:
            if self.base is None:
                raise MergeError(f"tensor '{self.name}': this method needs a base model")
            assert self._sources is not None
            self._deltas = [s - self.base for s in self._sources]
        return self._deltas

    @property
    def device(self) -> torch.device:
        ref = self.base if self.base is not None else (self._sources or self._deltas)[0]  # type: ignore[index]
        return ref.device
