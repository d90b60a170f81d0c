"""Parameter-space search (Akiba et al., arXiv 2403.13187, "PS"): a method and its per-source parameters.

The dimensions are generated from the merge method's ParamSpec: every
per-source float parameter (``weight``, ``density``, ``gamma``, ``epsilon``)
gets one dimension per source model, and global float parameters without a
default (slerp's ``t``) one dimension; ``search`` picks others (``lambda``).
Ranges come from the ParamSpec where it bounds the parameter, else from
``DEFAULT_RANGES`` (``weight`` in [0, 2]: the paper's evolved weights summed to
about 2, amplification rather than interpolation), and ``ranges`` overrides.

``layer_groups: G`` splits the L layers into G contiguous groups
(layer ℓ is in group ⌊ℓ·G/L⌋) and gives every searched parameter one value
per group: the recipe then holds, per parameter, one ``{filter, value}``
condition per layer (``model.layers.7.`` → its group's value) and a last
condition for the tensors outside the layers (embeddings, final norm, head):
the first group's value, a plain number. That is what a gradient gives them in
mergekit 0.1.5, which evaluates every tensor outside the layers at t = 0 (and
so does evomerge's planner); as a number rather than a gradient it means the
same in every mergekit version. Conditions are
used rather than a per-layer gradient list because the planner's gradient
interpolation recomputes the layer position as (i/(n−1))·(n−1), which is not
exactly i in floating point for some layer counts (24, 40, 48, 80 layers…),
so a per-layer list can blend in 1e-16 of the neighbouring group — enough to
move ``int(density·numel)``. Conditions are exact and still export to mergekit.

A list of methods adds one dimension ``method`` in [0, 1] cut into equal
intervals, one per method in the order listed; parameters a chosen method
does not have are ignored for that genome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evomerge.errors import ConfigError, MergeError
from evomerge.merge.registry import get_method
from evomerge.merge.spec import MergeMethod, ParamSpec
from evomerge.recipe.model import ModelSpec, Parameters, Recipe
from evomerge.recipe.params import ConditionalParameter, ParameterSetting
from evomerge.spaces.base import SearchSpace, Sources, choose_interval
from evomerge.spaces.config import PSConfig

# Ranges for parameters whose ParamSpec leaves them unbounded.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {"weight": (0.0, 2.0), "lambda": (0.0, 2.0)}
# A ParamSpec lower bound that is open (density in (0, 1]) becomes this much above it.
OPEN_BOUND_MARGIN = 0.01
# linear refuses to normalize by a weight sum below this (evomerge.merge.methods.linear).
_ZERO_WEIGHT_SUM = 1e-8
# Methods that take the base model as their first source (they interpolate from it).
_BASE_FIRST = frozenset({"slerp"})


def step_setting(values: Sequence[float], num_layers: int, layer_prefix: str) -> ParameterSetting:
    """One value per layer group as a recipe setting, exact for every layer (see the module docstring)."""
    vals = [float(v) for v in values]
    if len(set(vals)) == 1:
        return vals[0]
    g = len(vals)
    conds = [ConditionalParameter(filter=f"{layer_prefix}.{layer}.", value=vals[layer_group_of(layer, num_layers, g)])
             for layer in range(num_layers)]
    conds.append(ConditionalParameter(filter=None, value=vals[0]))  # outside the layers: the first group's
    return conds


def layer_group_of(layer: int, num_layers: int, groups: int) -> int:
    """The group of ``layer``: G contiguous groups whose sizes differ by at most one."""
    return layer * groups // num_layers


class PSSpace(SearchSpace):
    """Genome = [method?] + searched parameters (per source, per layer group) → one merge recipe."""

    kind = "ps"

    def __init__(self, config: PSConfig, sources: Sources) -> None:
        self.config = config
        self.sources = sources
        self.methods: list[MergeMethod] = [get_method(m) for m in config.methods]
        self.task_models = [m for m in sources.models if m != sources.base]
        if not self.task_models:
            raise ConfigError("sources.models: list at least one model to merge (besides the base)")
        for m in self.methods:
            try:
                m.check_sources(self._n_sources(m), self.uses_base(m), where=f"method '{m.name}'")
            except MergeError as exc:
                raise ConfigError(f"method: {exc}") from None
        self.searched = self._searched_params()
        self._check_fixed()
        self.ranges = {p: self._range(p) for p in self.searched}
        self.inits = {p: self._init(p) for p in self.searched}
        self.groups = config.layer_groups
        models_with_layers = [*self.task_models, *([sources.base] if sources.base else [])]
        counts = {m: sources.layers(m) for m in models_with_layers}
        if len(set(counts.values())) > 1:
            raise ConfigError(f"sources: a models-style merge needs equal layer counts, got {counts}")
        self.num_layers = next(iter(counts.values()))
        if self.groups > self.num_layers:
            raise ConfigError(f"layer_groups: {self.groups} groups for {self.num_layers} layers; "
                              f"use at most {self.num_layers}")
        self.layer_prefix = sources.layer_prefix(self.task_models[0]) if self.groups > 1 else ""
        self._build_box()

    # ---- construction ------------------------------------------------------------------------
    def uses_base(self, m: MergeMethod) -> bool:
        """Whether recipes of ``m`` name the base (a role of the method); else they merge the models alone."""
        return self.sources.base is not None and (m.needs_base or m.optional_base or m.name in _BASE_FIRST)

    def _n_sources(self, m: MergeMethod) -> int:
        return len(self.task_models) + (1 if m.name in _BASE_FIRST and self.uses_base(m) else 0)

    def _spec(self, name: str) -> ParamSpec | None:
        """The parameter's declaration, from a method where it has an effect when one has."""
        specs = [m.param(name) for m in self.methods if name in {p.name for p in m.params}]
        return next((s for s in specs if not s.inert), specs[0] if specs else None)

    def _searched_params(self) -> list[str]:
        if self.config.search is None:
            out: list[str] = []
            for m in self.methods:
                for p in m.params:
                    wanted = p.kind == "float" and not p.inert and (p.scope == "per_source" or p.default is None)
                    if wanted and p.name not in out and p.name not in self.config.fixed:
                        out.append(p.name)
            return out
        for i, name in enumerate(self.config.search):
            spec = self._spec(name)
            if spec is None:
                known = sorted({p.name for m in self.methods for p in m.params})
                raise ConfigError(f"search[{i}]: '{name}' is not a parameter of {self._method_names()} "
                                  f"(known: {', '.join(known)})")
            if spec.inert:
                raise ConfigError(f"search[{i}]: '{name}' changes nothing numerically ({spec.help}); "
                                  "there is nothing to search")
            if spec.kind != "float":
                what = "a true/false" if spec.kind == "bool" else "a whole-number"
                raise ConfigError(f"search[{i}]: '{name}' is {what} parameter; set it under 'fixed'")
            if name in self.config.fixed:
                raise ConfigError(f"search[{i}]: '{name}' is also under 'fixed'; keep it in one place")
            scopes = {m.param(name).scope for m in self.methods if name in {p.name for p in m.params}}
            if len(scopes) > 1:
                raise ConfigError(f"search[{i}]: '{name}' is per-source in one method and global in another")
        if len(set(self.config.search)) != len(self.config.search):
            raise ConfigError(f"search: a parameter is listed twice: {self.config.search}")
        return list(self.config.search)

    def _method_names(self) -> str:
        return "/".join(m.name for m in self.methods)

    def _check_fixed(self) -> None:
        for name, value in self.config.fixed.items():
            spec = self._spec(name)
            if spec is None:
                raise ConfigError(f"fixed.{name}: not a parameter of {self._method_names()}")
            try:
                spec.check(value, where=f"fixed.{name}")
            except MergeError as exc:
                raise ConfigError(str(exc)) from None
        for m in self.methods:
            for p in m.params:
                if p.default is None and p.name not in self.searched and p.name not in self.config.fixed:
                    raise ConfigError(f"fixed: method '{m.name}' needs '{p.name}'; search it or give it under "
                                      "'fixed'")
        for key in self.config.ranges:
            if key not in self.searched:
                raise ConfigError(f"ranges.{key}: '{key}' is not searched (searched: {', '.join(self.searched)})")
        for key in self.config.init:
            if key not in self.searched:
                raise ConfigError(f"init.{key}: '{key}' is not searched (searched: {', '.join(self.searched)})")

    def _range(self, name: str) -> tuple[float, float]:
        specs = [m.param(name) for m in self.methods if name in {p.name for p in m.params}]
        given = self.config.ranges.get(name)
        if given is None:
            spec = specs[0]
            if spec.search_range is not None:
                given = spec.search_range
            elif spec.low is not None and spec.high is not None:
                given = (spec.low + (OPEN_BOUND_MARGIN if spec.low_open else 0.0), spec.high)
            elif name in DEFAULT_RANGES:
                given = DEFAULT_RANGES[name]
            else:
                raise ConfigError(f"ranges.{name}: '{name}' has no natural range; give one, e.g. "
                                  f"ranges: {{{name}: [0.0, 1.0]}}")
        lo, hi = float(given[0]), float(given[1])
        if not lo <= hi:
            raise ConfigError(f"ranges.{name}: [{lo:g}, {hi:g}] must satisfy low <= high")
        for spec in specs:
            below = spec.low is not None and (lo < spec.low or (spec.low_open and lo <= spec.low))
            above = spec.high is not None and hi > spec.high
            if below or above:
                bracket = "(" if spec.low_open else "["
                lo_s = "-inf" if spec.low is None else f"{spec.low:g}"
                hi_s = "inf" if spec.high is None else f"{spec.high:g}"
                raise ConfigError(f"ranges.{name}: [{lo:g}, {hi:g}] leaves the parameter's domain "
                                  f"{bracket}{lo_s}, {hi_s}]")
        return lo, hi

    def _init(self, name: str) -> float:
        lo, hi = self.ranges[name]
        value = self.config.init.get(name, (lo + hi) / 2)
        if not lo <= value <= hi:
            raise ConfigError(f"init.{name}: {value:g} is outside its range [{lo:g}, {hi:g}]")
        return float(value)

    def _build_box(self) -> None:
        names: list[str] = []
        lower: list[float] = []
        upper: list[float] = []
        x0: list[float] = []
        # (parameter, source index or None for global, group) per dimension, in genome order
        self._slots: list[tuple[str, int | None, int]] = []
        if len(self.methods) > 1:
            names.append("method")
            lower.append(0.0)
            upper.append(1.0)
            x0.append(0.5 / len(self.methods))  # the middle of the first method's interval
            self._slots.append(("method", None, 0))
        suffixes = [""] if self.groups == 1 else [f"@g{g}" for g in range(self.groups)]
        for p in self.searched:
            lo, hi = self.ranges[p]
            per_source = self._spec(p).scope == "per_source"  # type: ignore[union-attr]
            targets: list[int | None] = list(range(len(self.task_models))) if per_source else [None]
            for k in targets:
                label = "" if k is None else f"[{self.sources.label(self.task_models[k])}]"
                for g, suffix in enumerate(suffixes):
                    names.append(f"{p}{label}{suffix}")
                    lower.append(lo)
                    upper.append(hi)
                    x0.append(self.inits[p])
                    self._slots.append((p, k, g))
        if not names:
            raise ConfigError(f"search: {self._method_names()} has no numeric parameter to search; pick another "
                              "method or list several")
        self._set_box(names, lower, upper)
        self._x0 = np.asarray(x0, dtype=float)

    # ---- the contract --------------------------------------------------------------------------
    def x0(self) -> np.ndarray:
        """Every parameter at its ``init`` (default: the middle of its range, the paper's x₀ = 0.5 of a
        unit box); with a method list, the first method."""
        return self._x0.copy()

    def decode(self, genome: np.ndarray) -> Recipe:
        x = self.clip(genome)
        method = self.methods[choose_interval(float(x[0]), len(self.methods))] if len(self.methods) > 1 \
            else self.methods[0]
        own = {p.name: p for p in method.params}
        per_source: dict[str, np.ndarray] = {}
        global_: dict[str, np.ndarray] = {}
        for value, (p, k, g) in zip(x, self._slots, strict=True):
            if p == "method" or p not in own or own[p].inert:
                continue
            if k is None:
                global_.setdefault(p, np.zeros(self.groups))[g] = value
            else:
                per_source.setdefault(p, np.zeros((len(self.task_models), self.groups)))[k, g] = value
        self._constrain(method, per_source)
        top: Parameters = {}
        for name, value in self.config.fixed.items():
            if name in own:
                top[name] = value
        for name, vals in global_.items():
            top[name] = self._setting(vals)
        models = []
        for k, path in enumerate(self.task_models):
            params: Parameters = {name: self._setting(vals[k]) for name, vals in per_source.items()}
            models.append(ModelSpec(model=path, parameters=params or None))
        base = self.sources.base if self.uses_base(method) else None
        return Recipe(models=models, merge_method=method.name, base_model=base, parameters=top or None,
                      dtype=self.config.dtype, seed=self.config.seed)

    def _setting(self, values: np.ndarray) -> ParameterSetting:
        if self.groups == 1:
            return float(values[0])
        return step_setting(values, self.num_layers, self.layer_prefix)

    def _constrain(self, method: MergeMethod, per_source: dict[str, np.ndarray]) -> None:
        """Keep every in-box genome mergeable where a method has a forbidden corner.

        DELLA needs density ± epsilon inside (0, 1): epsilon is cut to just under
        min(density, 1 − density). A normalized linear merge cannot divide by
        weights summing to zero (the box corner of all-zero weights): such a
        group gets equal weights, the limit of equal small weights.
        """
        shape = (len(self.task_models), self.groups)

        def current(name: str) -> np.ndarray:
            if name in per_source:
                return per_source[name]
            return np.full(shape, float(self.config.fixed.get(name, method.param(name).default)))  # type: ignore[arg-type]

        if method.name.startswith("della") and {"density", "epsilon"} & per_source.keys():
            density, eps = current("density"), current("epsilon")
            band = np.minimum(density, 1.0 - density) * (1.0 - 1e-6)
            per_source["epsilon"] = np.where(density < 1.0, np.minimum(eps, band), eps)
        if method.name == "linear" and "weight" in per_source and \
                self.config.fixed.get("normalize", method.param("normalize").default):
            w = per_source["weight"]
            zero = np.abs(w.sum(axis=0)) < _ZERO_WEIGHT_SUM
            per_source["weight"] = np.where(zero[None, :], 1.0, w)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.model_dump(mode="json"), "sources": self.sources.describe(),
                "num_layers": self.num_layers, "methods": [m.name for m in self.methods], **self.box_description()}
