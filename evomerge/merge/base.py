"""The contract every merge method follows: a parameter schema and a pure tensor function.

Like mergekit's method declarations, each method states its parameters with
their scope (global or per source), their ranges and defaults, and its input
contract (needs a base model, how many sources). The search spaces are
generated from these declarations, and a recipe is validated against them
before a single tensor is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from evomerge.errors import MergeError

Scope = Literal["global", "per_source"]
ParamValue = float | bool


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a merge method: where it applies, its range, its default."""

    name: str
    scope: Scope
    default: ParamValue | None = None  # None means required
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low (e.g. density in (0, 1])
    kind: Literal["float", "bool"] = "float"
    help: str = ""

    def check(self, value: object, *, where: str) -> ParamValue:
        """Return the value coerced to its kind, or raise MergeError naming ``where``."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise MergeError(f"{where}: parameter '{self.name}' must be true or false, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MergeError(f"{where}: parameter '{self.name}' must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise MergeError(f"{where}: parameter '{self.name}' must be finite, got {x}")
        if self.low is not None and (x < self.low or (self.low_open and x <= self.low)):
            bracket = "(" if self.low_open else "["
            hi = "inf" if self.high is None else f"{self.high:g}"
            raise MergeError(
                f"{where}: parameter '{self.name}' = {x:g} is outside {bracket}{self.low:g}, {hi}]"
            )
        if self.high is not None and x > self.high:
            raise MergeError(f"{where}: parameter '{self.name}' = {x:g} is above its maximum {self.high:g}")
        return x


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
        """``orders``: per task vector, its precomputed ``sparsify.MagnitudeOrder`` (or None), for a resident
        worker's magnitude top-k; the result is the same without them."""
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
        """Task vector ``k``'s precomputed magnitude order, or None."""
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


MergeFn = Callable[[MergeInputs, Mapping[str, object], "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method. Call it to merge one tensor.

    ``fn(inputs, params, generator)`` receives validated parameters: per-source
    ones as lists of floats (one per source, in source order), global ones as
    scalars. It returns the merged tensor in float32; the caller casts.
    """

    name: str
    fn: MergeFn
    params: tuple[ParamSpec, ...]
    needs_base: bool
    min_sources: int = 1
    max_sources: int | None = None
    randomized: bool = False
    reference: str = ""  # paper (arXiv id) the math follows
    mergekit_name: str | None = None  # the same method's name in mergekit, if it has it
    summary: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def param(self, name: str) -> ParamSpec:
        for spec in self.params:
            if spec.name == name:
                return spec
        known = ", ".join(p.name for p in self.params) or "none"
        raise MergeError(f"method '{self.name}' has no parameter '{name}' (known: {known})")

    def resolve_params(self, params: Mapping[str, object], n_sources: int, *, where: str) -> dict[str, object]:
        """Validate ``params`` against the schema, fill defaults, broadcast per-source scalars."""
        for key in params:
            self.param(key)
        out: dict[str, object] = {}
        for spec in self.params:
            value = params.get(spec.name, spec.default)
            if value is None:
                raise MergeError(f"{where}: method '{self.name}' needs parameter '{spec.name}'")
            if spec.scope == "per_source":
                values = list(value) if isinstance(value, (list, tuple)) else [value] * n_sources
                if len(values) != n_sources:
                    raise MergeError(
                        f"{where}: parameter '{spec.name}' has {len(values)} values for {n_sources} sources"
                    )
                out[spec.name] = [spec.check(v, where=f"{where}, source {i}") for i, v in enumerate(values)]
            else:
                out[spec.name] = spec.check(value, where=where)
        return out

    def check_sources(self, n_sources: int, has_base: bool, *, where: str) -> None:
        if n_sources < self.min_sources:
            raise MergeError(f"{where}: method '{self.name}' needs at least {self.min_sources} source(s), "
                             f"got {n_sources}")
        if self.max_sources is not None and n_sources > self.max_sources:
            raise MergeError(f"{where}: method '{self.name}' takes at most {self.max_sources} source(s), "
                             f"got {n_sources}")
        if self.needs_base and not has_base:
            raise MergeError(f"{where}: method '{self.name}' needs a base model (set base_model)")

    def __call__(self, inputs: MergeInputs, params: Mapping[str, object] | None = None, *,
                 seed: int | None = None) -> torch.Tensor:
        where = f"tensor '{inputs.name}'"
        self.check_sources(inputs.n_sources, inputs.base is not None, where=where)
        resolved = self.resolve_params(params or {}, inputs.n_sources, where=where)
        generator = None
        if self.randomized:
            if seed is None:
                raise MergeError(f"{where}: method '{self.name}' is randomised and needs an explicit seed")
            # always a CPU generator, whatever the tensors' device: the masks are drawn on the CPU and moved,
            # so a recipe and seed give the same merge on CPU and CUDA (the export is what the search scored)
            generator = torch.Generator(device="cpu").manual_seed(seed)
        return self.fn(inputs, resolved, generator)
