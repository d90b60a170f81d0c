"""Request and response bodies of the HTTP API: strict pydantic models with bounded sizes.

Every body forbids unknown keys and bounds each string, list and mapping, so a
client can neither smuggle a storage URL or output path into a study nor send
unbounded data; values the models cannot check (a space's own keys) are
validated by the space builder and refused with 422.

Numbers are finite everywhere a client's value could come back in a reply (a
space bound, a reference point, a strategy option): NaN or Infinity there is
refused with 422 instead of reaching a genome or a hypervolume. Only a tell's
scores may be non-finite: such a tell records the trial as failed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge.server.studies import NAME_PATTERN

ObjectiveName = str
_OBJ_NAME = r"^[A-Za-z0-9_.:\-\[\]]{1,64}$"
Finite = Annotated[float, Field(allow_inf_nan=False)]
Scalar = int | Finite | str | bool | None


def finite_tree(value: Any, where: str) -> Any:
    """``value`` unchanged if no float in it (at any depth) is NaN or infinite; ValueError naming the key otherwise."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path}: {item!r} is not a finite number")
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourcesIn(_Strict):
    """Source models as *names* (the client scores them); paths are only read under the server's models root."""

    base: str | None = Field(default=None, min_length=1, max_length=512)
    models: list[str] = Field(min_length=1, max_length=16)
    num_layers: int | None = Field(default=None, ge=1, le=1024,
                                   description="decoder layers of every source; spares the server reading them")


class StrategyIn(_Strict):
    name: str = Field(default="cma", max_length=32)
    options: dict[str, Scalar] = Field(default_factory=dict, max_length=16)
    batch_size: int | None = Field(default=None, ge=1, le=1024)


class ObjectiveIn(_Strict):
    name: str = Field(pattern=_OBJ_NAME)
    direction: Literal["maximize", "minimize"]
    weight: float = Field(default=1.0, allow_inf_nan=False, ge=-1e6, le=1e6)


class BudgetIn(_Strict):
    evaluations: int = Field(ge=1, le=1_000_000)


class RacingIn(_Strict):
    """Staged scoring by the client (see ``evomerge.server.racing``): the run config's ``racing`` keys, plus per
    objective the number of examples its per-example scores cover and (Bernstein–Serfling) their range."""

    rule: Literal["bound"] = "bound"
    test: Literal["bernstein_serfling", "normal"] = "bernstein_serfling"
    stages: list[Finite] = Field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0], min_length=2, max_length=16)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    order_seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    k: int = Field(default=1, ge=1, le=1000)
    examples: dict[str, Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=16)
    score_range: dict[str, tuple[Finite, Finite]] = Field(default_factory=dict, max_length=16)

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[float]) -> list[float]:
        from evomerge.racing.config import RacingConfig

        return RacingConfig(stages=v).stages

    @field_validator("score_range")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for k, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"score_range.{k}: low must be below high")
        return v


class StageIn(_Strict):
    """One stage's per-example scores (for the examples that stage adds, in the study's order), per objective."""

    ticket: str = Field(min_length=1, max_length=64)
    stage: int = Field(ge=0, le=15)
    per_example: dict[str, list[float]] = Field(max_length=16)


class StageOut(_Strict):
    trial: int
    stop: bool = Field(description="true: the candidate cannot beat the reference; it is recorded pruned, stop it")
    reason: str | None
    status: str


class StudyCreate(_Strict):
    """A study: search space, strategy, objectives with directions, budget (no runner: the client scores)."""

    name: str = Field(pattern=NAME_PATTERN)
    space: dict[str, Any] = Field(max_length=32, description="e.g. {kind: box, dim: 4} or a PS space config")
    sources: SourcesIn | None = None
    strategy: StrategyIn = Field(default_factory=StrategyIn)
    objectives: list[ObjectiveIn] = Field(min_length=1, max_length=16)
    budget: BudgetIn
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    reference_point: list[Finite] | None = Field(default=None, max_length=16)
    racing: RacingIn | None = None
    lease_s: float | None = Field(default=None, allow_inf_nan=False, gt=0, le=7 * 86400,
                                  description="re-hand a trial not told within this many seconds (a dead client)")

    @field_validator("space")
    @classmethod
    def _finite_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        return finite_tree(value, "space")


class AskIn(_Strict):
    n: int = Field(default=1, ge=1, le=256)
    wait_s: float = Field(default=0.0, allow_inf_nan=False, ge=0.0, le=60.0,
                          description="block up to this long for a tell when a generational strategy has none to give")


class Candidate(_Strict):
    trial: int
    ticket: str
    genome: list[float]
    recipe: dict[str, Any] | None


class AskOut(_Strict):
    candidates: list[Candidate]
    complete: bool
    retry_after_s: float | None = Field(description="set when fewer than asked were given: ask again after it")
    reason: str | None = None


class TellIn(_Strict):
    ticket: str = Field(min_length=1, max_length=64)
    objectives: dict[str, float] | None = Field(default=None, max_length=16)
    error: str | None = Field(default=None, max_length=20_000, description="the candidate failed: why")
    per_example: dict[str, list[float]] | None = Field(default=None, max_length=16)
    worker: str = Field(default="remote", max_length=128)
    seconds: float = Field(default=0.0, allow_inf_nan=False, ge=0.0, le=1e9)


class TrialOut(_Strict):
    trial: int
    status: str
    objectives: dict[str, float]
    genome: list[float] | None
    recipe: dict[str, Any] | None


class MergekitOut(_Strict):
    yaml: str
    warnings: list[str]


class ErrorOut(BaseModel):
    """Every refusal but a body that fails validation: 401, 403, 404, 409, 413, and 422 raised by the study code."""

    detail: str


class FieldError(BaseModel):
    """One reason a request failed validation (pydantic's error, with the offending input echoed, NaN as a string)."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    """422: a list of field errors for a body or path that fails validation, one line for a config the study refuses."""

    detail: str | list[FieldError]
