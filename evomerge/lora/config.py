"""Configs of the LoRA search spaces: the two-stage Evo-Merging run and one of its stages.

``lora_evo`` is what a user writes (configs/lora_evo_tinylm.yaml); the driver
turns it into two ``lora_stage`` configs, each an ordinary Study in its own
folder. Defaults are the paper's (Chen et al., arXiv 2509.12951): α searched
first for 400 evaluations with β = 1/N, then β ∈ [−1.5, 1.5] with α fixed,
CMA-ES with σ0 = 0.05 in genome units; the L1 penalty is an objective weight.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge.yamlfile import validate_mapping

Range = tuple[float, float]
LORA_KINDS = ("lora_evo", "lora_stage")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraFitnessConfig(_Strict):
    """The LM-loss set: ``examples`` prompt/answer pairs mixed evenly from the ``tasks``' splits."""

    tasks: list[str] = Field(min_length=1)  # generation task YAMLs (prompt/answer JSONL)
    examples: int = Field(default=300, ge=1)
    batch_size: int = Field(default=64, ge=1)


def _check_range(name: str, r: Range, init: float | None) -> None:
    lo, hi = r
    if not lo < hi:
        raise ValueError(f"{name} [{lo:g}, {hi:g}] must satisfy low < high")
    if init is not None and not lo <= init <= hi:
        raise ValueError(f"{name} init {init:g} lies outside [{lo:g}, {hi:g}]")


class LoraEvoConfig(_Strict):
    """Two-stage Evo-Merging over the run's LoRA adapters (``sources.models``) on ``sources.base``."""

    kind: Literal["lora_evo"] = "lora_evo"
    fitness: LoraFitnessConfig
    alpha_evaluations: int = Field(default=400, ge=1)  # stage 1; stage 2 gets the rest of budget.evaluations
    alpha_range: Range = (0.0, 1.0)
    alpha_init: float = 1.0  # start from the unpruned adapters (the uniform average at β = 1/N)
    beta_range: Range = (-1.5, 1.5)
    beta_init: float | None = None  # None: 1/N, stage one's β
    sigma0: float = Field(default=0.05, gt=0)  # CMA-ES step in genome units (converted per stage to a box fraction)

    @model_validator(mode="after")
    def _ranges(self) -> LoraEvoConfig:
        _check_range("alpha_range", self.alpha_range, self.alpha_init)
        _check_range("beta_range", self.beta_range, self.beta_init)
        if self.alpha_range[0] < 0 or self.alpha_range[1] > 1:
            raise ValueError("alpha_range must lie inside [0, 1] (alpha is a keep-fraction)")
        return self


class LoraStageConfig(_Strict):
    """One stage: ``search`` α or β per adapter in ``range``, the other held at ``fixed`` (default α 1, β 1/N)."""

    kind: Literal["lora_stage"] = "lora_stage"
    search: Literal["alpha", "beta"]
    range: Range
    init: float | None = None  # None: 1/N for beta, 1 for alpha
    fixed: list[float] | None = None
    fitness: LoraFitnessConfig

    @model_validator(mode="after")
    def _range(self) -> LoraStageConfig:
        _check_range("range", self.range, self.init)
        if self.search == "alpha" and (self.range[0] < 0 or self.range[1] > 1):
            raise ValueError("an alpha range must lie inside [0, 1] (alpha is a keep-fraction)")
        return self


def parse_lora_space(data: Any, *, source: str = "space") -> LoraEvoConfig | LoraStageConfig:
    """Validate a ``lora_evo`` or ``lora_stage`` mapping; errors name ``source`` and the key."""
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = LoraEvoConfig if kind == "lora_evo" else LoraStageConfig
    return validate_mapping(cls, data, source=source, what=f"{kind} search space")
