"""The genome ↔ LoRA-recipe map of one Evo-Merging stage (arXiv 2509.12951).

Stage one searches α (keep-fraction of each adapter's LoRA-A) with β fixed at
1/N; stage two searches β (signed weight per adapter) with α fixed at stage
one's best. Either way the genome has one entry per adapter, named
``alpha[label]`` / ``beta[label]``, and decodes to a :class:`LoraRecipe`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.lora.config import LoraEvoConfig, LoraStageConfig, parse_lora_space
from evomerge.lora.recipe import LoraRecipe
from evomerge.spaces.base import SearchSpace, Sources


def stage_one(config: LoraEvoConfig) -> LoraStageConfig:
    """Stage one of a ``lora_evo`` run: α in ``alpha_range`` from ``alpha_init``, β = 1/N."""
    return LoraStageConfig(search="alpha", range=config.alpha_range, init=config.alpha_init,
                           fitness=config.fitness)


def stage_two(config: LoraEvoConfig, alpha: list[float]) -> LoraStageConfig:
    """Stage two: β in ``beta_range`` from ``beta_init`` (default 1/N), α fixed at stage one's best."""
    return LoraStageConfig(search="beta", range=config.beta_range, init=config.beta_init,
                           fixed=[float(a) for a in alpha], fitness=config.fitness)


class LoraStageSpace(SearchSpace):
    kind: ClassVar[str] = "lora_stage"

    def __init__(self, config: LoraStageConfig, sources: Sources) -> None:
        if sources.base is None:
            raise ConfigError("sources.base: a LoRA merge needs the adapters' base model")
        self.config = config
        self.sources = sources
        n = len(sources.models)
        if config.fixed is not None and len(config.fixed) != n:
            raise ConfigError(f"space.fixed: {len(config.fixed)} values for {n} adapters")
        self.fixed = np.asarray(config.fixed if config.fixed is not None else
                                ([1.0] * n if config.search == "beta" else [1.0 / n] * n), dtype=float)
        if config.search == "beta" and np.any((self.fixed < 0) | (self.fixed > 1)):
            raise ConfigError(f"space.fixed: alpha values are keep-fractions in [0, 1], got {config.fixed}")
        init = config.init if config.init is not None else (1.0 if config.search == "alpha" else 1.0 / n)
        if not config.range[0] <= init <= config.range[1]:
            raise ConfigError(f"space.init: {init:g} lies outside range {list(config.range)}")
        self._x0 = np.full(n, float(init))
        assert sources.labels is not None
        self._set_box([f"{config.search}[{label}]" for label in sources.labels], [config.range[0]] * n,
                      [config.range[1]] * n)

    def x0(self) -> np.ndarray:
        return self._x0.copy()

    def decode(self, genome: np.ndarray) -> LoraRecipe:  # type: ignore[override]
        x = self.clip(genome)
        alpha, beta = (x, self.fixed) if self.config.search == "alpha" else (self.fixed, x)
        assert self.sources.base is not None
        return LoraRecipe(base=self.sources.base, adapters=list(self.sources.models),
                          alpha=[float(v) for v in alpha], beta=[float(v) for v in beta])

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.model_dump(mode="json"), "sources": self.sources.describe(),
                **self.box_description()}


def build_lora_space(config: dict[str, Any] | LoraEvoConfig | LoraStageConfig, sources: Sources) -> LoraStageSpace:
    """The space a ``lora_stage`` config describes; for ``lora_evo``, stage one's (like ``ps_dfs``)."""
    cfg = config if isinstance(config, (LoraEvoConfig, LoraStageConfig)) else parse_lora_space(config)
    return LoraStageSpace(stage_one(cfg) if isinstance(cfg, LoraEvoConfig) else cfg, sources)
