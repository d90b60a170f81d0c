"""LiNeS space (Wang et al., arXiv 2410.17146): search the depth scaling of a merged task vector.

LiNeS scales layer ℓ's merged task vector by λ(ℓ) = α + β·ℓ/(L−1), so that
shallow layers stay close to the base. The recipe expresses it with the
method's global ``lambda`` as the gradient [α, α+β] over the layers: the
planner interpolates it linearly at t = ℓ/(L−1), which is exactly LiNeS's
0-based form (``evomerge.merge.methods.lines``). Tensors outside the layers
(embeddings, final norm, head) get α, as in the paper's code — a
``{filter, value}`` condition on the layer prefix does that, and exports to
mergekit unchanged. Dimensions: α, β, and optionally one weight per source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.errors import ConfigError, MergeError
from evomerge.merge.registry import get_method
from evomerge.recipe.model import ModelSpec, Parameters, Recipe
from evomerge.recipe.params import ConditionalParameter, ParameterSetting
from evomerge.spaces.base import SearchSpace, Sources
from evomerge.spaces.config import LiNeSConfig


def lines_lambda(alpha: float, beta: float, layer_prefix: str) -> ParameterSetting:
    """λ as a recipe setting: α + β·t across the layers, α outside them."""
    return [ConditionalParameter(filter=f"{layer_prefix}.", value=[float(alpha), float(alpha + beta)]),
            ConditionalParameter(filter=None, value=float(alpha))]


class LiNeSSpace(SearchSpace):
    """Genome = [α, β, weight per source?] → a task-vector merge with LiNeS depth scaling."""

    kind = "lines"

    def __init__(self, config: LiNeSConfig, sources: Sources) -> None:
        self.config = config
        self.sources = sources
        self.method = get_method(config.method)
        names = {p.name: p for p in self.method.params}
        if "lambda" not in names or names["lambda"].scope != "global":
            raise ConfigError(f"method: '{self.method.name}' has no global 'lambda' to scale by depth "
                              "(use task_arithmetic, ties, dare_ties, …)")
        if not self.method.needs_base or sources.base is None:
            raise ConfigError("sources.base: LiNeS scales task vectors, so it needs a base model and a "
                              "task-vector method")
        self.task_models = [m for m in sources.models if m != sources.base]
        if not self.task_models:
            raise ConfigError("sources.models: list at least one model to merge (besides the base)")
        try:
            self.method.check_sources(len(self.task_models), True, where=f"method '{self.method.name}'")
        except MergeError as exc:
            raise ConfigError(f"method: {exc}") from None
        for key, value in config.fixed.items():
            if key not in names or key == "lambda":
                raise ConfigError(f"fixed.{key}: not a parameter {self.method.name} takes here")
            try:
                names[key].check(value, where=f"fixed.{key}")
            except MergeError as exc:
                raise ConfigError(str(exc)) from None
        if config.search_weights and "weight" in config.fixed:
            raise ConfigError("fixed.weight: weights are searched (search_weights: true); remove one")
        self.num_layers = sources.layers(self.task_models[0])
        self.layer_prefix = sources.layer_prefix(self.task_models[0])
        box = [("alpha", config.alpha, config.alpha_init), ("beta", config.beta, config.beta_init)]
        if config.search_weights:
            box += [(f"weight[{sources.label(m)}]", config.weight_range, config.weight_init)
                    for m in self.task_models]
        x0 = []
        for name, (lo, hi), init in box:
            value = (lo + hi) / 2 if init is None else init
            if not lo <= value <= hi:
                raise ConfigError(f"{name.split('[')[0]}_init: {value:g} is outside [{lo:g}, {hi:g}]")
            x0.append(value)
        self._set_box([b[0] for b in box], [b[1][0] for b in box], [b[1][1] for b in box])
        self._x0 = np.asarray(x0, dtype=float)

    def x0(self) -> np.ndarray:
        """Each dimension at its ``*_init`` (default: the middle of its range; weights at ``weight_init``)."""
        return self._x0.copy()

    def decode(self, genome: np.ndarray) -> Recipe:
        x = self.clip(genome)
        alpha, beta = float(x[0]), float(x[1])
        top: Parameters = dict(self.config.fixed)
        top["lambda"] = lines_lambda(alpha, beta, self.layer_prefix)
        if not self.config.search_weights:
            top.setdefault("weight", 1.0)
        models = []
        for k, path in enumerate(self.task_models):
            params: Parameters | None = {"weight": float(x[2 + k])} if self.config.search_weights else None
            models.append(ModelSpec(model=path, parameters=params))
        return Recipe(models=models, merge_method=self.method.name, base_model=self.sources.base, parameters=top,
                      dtype=self.config.dtype, seed=self.config.seed)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.model_dump(mode="json"), "sources": self.sources.describe(),
                "num_layers": self.num_layers, **self.box_description()}
