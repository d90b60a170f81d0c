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
ParamValue = float | bool | int


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a merge method: where it applies, its range, its default."""

    name: str
    scope: Scope
    default: ParamValue | None = None  # None means required
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low (e.g. density in (0, 1])
    kind: Literal["float", "bool", "int"] = "float"
    help: str = ""
    # Accepted because mergekit accepts it, but it changes no number here (e.g. ``int8_mask``, a memory
    # option of mergekit's): kept in the recipe and its export, never searched; ``help`` says why.
    inert: bool = False
    # The range a search space explores when the valid range [low, high] is unbounded or too wide to search.
    search_range: tuple[float, float] | None = None

    def check(self, value: object, *, where: str) -> ParamValue:
        """Return the value coerced to its kind, or raise MergeError naming ``where``.

        Coercions are mergekit's (pydantic's lax mode): a number 0 or 1 is a boolean, a boolean is the
        number 0 or 1, an integral float is an int, and a string spelling any of these (YAML reads
        ``1e-3`` as a string) is that value.
        """
        value = _lax(value, self.kind)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise MergeError(f"{where}: parameter '{self.name}' must be true or false, got {value!r}")
        if not isinstance(value, (int, float)):
            raise MergeError(f"{where}: parameter '{self.name}' must be a number, got {value!r}")
        if self.kind == "int":
            if not float(value).is_integer():
                raise MergeError(f"{where}: parameter '{self.name}' must be a whole number, got {value!r}")
            value = int(value)
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
        return int(value) if self.kind == "int" else x


_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def _lax(value: object, kind: str) -> object:
    """``value`` read the way mergekit's pydantic validation reads it for a parameter of ``kind``;
    anything it cannot read is returned unchanged (and refused by the caller)."""
    if isinstance(value, str):
        text = value.strip()
        if kind == "bool":
            low = text.lower()
            return True if low in _TRUE else False if low in _FALSE else value
        try:
            return float(text)
        except ValueError:
            return value
    if kind == "bool" and not isinstance(value, bool) and isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if kind != "bool" and isinstance(value, bool):
        return int(value)
    return value


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
    # Uses a base model when the recipe names one (merging task vectors), the sources alone otherwise.
    optional_base: bool = False
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
