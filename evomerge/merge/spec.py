"""What a merge method is, as data: its parameters, input contract and where its tensor function lives.

Like mergekit's method declarations, each method states its parameters with
their scope (global or per source), their ranges and defaults, and its input
contract (needs a base model, how many sources). The search spaces are
generated from these declarations, and a recipe is validated against them
before a single tensor is read.

A declaration names its tensor function as ``"package.module:function"`` and
imports it on first use, so listing methods, validating a recipe or a mergekit
YAML and building a search space never import torch (``evomerge methods``
answers at once); the built-in declarations are in ``evomerge.merge.catalog``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from evomerge.errors import MergeError

if TYPE_CHECKING:
    import torch

    from evomerge.merge.base import MergeInputs

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


MergeFn = Callable[["MergeInputs", Mapping[str, object], "torch.Generator | None"], "torch.Tensor"]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method. Call it to merge one tensor.

    ``fn(inputs, params, generator)`` receives validated parameters: per-source
    ones as lists of floats (one per source, in source order), global ones as
    scalars. It returns the merged tensor in float32; the caller casts.
    """

    name: str
    # The tensor function: a MergeFn, or where to import it from, "package.module:function" (see ``fn``).
    impl: str | MergeFn
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

    @cached_property
    def fn(self) -> MergeFn:
        """The tensor function, imported from ``impl`` on first use (with torch and the method's module)."""
        if callable(self.impl):
            return self.impl
        module, _, attr = self.impl.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise  # the module exists and fails to import: its own traceback says why
            raise MergeError(f"method '{self.name}': cannot import its function '{self.impl}' ({exc})") from None
        except AttributeError as exc:
            raise MergeError(f"method '{self.name}': cannot import its function '{self.impl}' ({exc})") from None
        if not callable(fn):
            raise MergeError(f"method '{self.name}': '{self.impl}' is not a function")
        return fn

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
        import torch

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
