"""The run config's ``racing:`` block (validated strictly, like the rest of the run config)."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RULES = ("none", "bound", "median", "successive_halving", "hyperband")


class RacingConfig(BaseModel):
    """``rule: none`` scores every candidate fully (as without the block); ``bound`` stops a candidate once an
    empirical Bernstein–Serfling bound says, at ``confidence``, that its full-split score is below the reference."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["none", "bound", "median", "successive_halving", "hyperband"] = "bound"
    # cumulative fractions of each task's examples on the scored split; the last one is 1.0
    stages: list[float] = Field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0], min_length=1)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    order_seed: int | None = None  # the seeded example order; None: the run's seed
    k: int = Field(default=1, ge=1)  # single objective: race against the k-th best fully scored candidate
    # rule bound: the confidence bound. bernstein_serfling: exact at any sample size, needs each task's score range;
    # normal: the paired normal approximation with the finite-population correction (asymptotic, much tighter)
    test: Literal["bernstein_serfling", "normal"] = "bernstein_serfling"
    # rules successive_halving / hyperband: Optuna's pruner options, steps counted in examples scored (all tasks
    # together). min_resource None: the examples of the first stage; reduction_factor None: Optuna's default
    # (4 for successive_halving, 3 for hyperband); hyperband's max_resource: the examples of a full pass
    min_resource: int | None = Field(default=None, ge=1)
    reduction_factor: int | None = Field(default=None, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)
    bootstrap_count: int = Field(default=0, ge=0)

    @field_validator("stages")
    @classmethod
    def _cumulative(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < f <= 1.0 for f in v):
            raise ValueError(f"every stage must be a fraction in (0, 1], got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"stages must increase strictly, got {v}")
        if v[-1] != 1.0:
            raise ValueError(f"the last stage must be 1.0 (every example), got {v[-1]}")
        return v
