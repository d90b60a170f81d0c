"""The run config: one YAML file that fully describes a search, validated with errors that name the key.

Relative paths (sources, task files, a space preset, the output folder, a journal
storage, and the models of the baselines' recipes) are resolved against the
directory ``evomerge run`` is started from (as mergekit does) and stored absolute
in the run folder, so ``evomerge resume RUN``, ``status``, ``export`` and ``report``
find the same files wherever they are started from, and a changed config is detected.
A baseline's model path is resolved only when it exists there (else it may be a hub id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.racing.config import RacingConfig
from evomerge.recipe.tokenizer import TokenizerSpec
from evomerge.yamlfile import read_yaml, validate_mapping

Direction = Literal["maximize", "minimize"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourcesConfig(_Strict):
    """The models a search merges: ``base`` (task vectors are taken against it) and the experts."""

    base: str | None = None
    models: list[str] = Field(min_length=1)
    # mergekit's tokenizer settings when the sources' vocabularies differ (a string is tokenizer_source's
    # shorthand): every candidate recipe carries them and the workers hold the merged vocabulary
    tokenizer: TokenizerSpec | None = None

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _source_shorthand(cls, v: Any) -> Any:
        return {"source": v} if isinstance(v, str) else v


class ObjectiveConfig(_Strict):
    """One objective: a fitness task YAML, or a named value of a function runner's output."""

    task: str | None = None
    name: str | None = None
    direction: Direction | None = None
    weight: float = 1.0  # in the scalarisation single-objective strategies optimise

    @model_validator(mode="after")
    def _task_or_name(self) -> ObjectiveConfig:
        if self.task is None and (self.name is None or self.direction is None):
            raise ValueError("give 'task' (a fitness task YAML) or both 'name' and 'direction'")
        return self


class StrategyConfig(_Strict):
    name: str = "cma"
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int | None = Field(default=None, ge=1)  # asks per round for strategies without a natural batch


FIRST_FAILURES = 5  # the breaker's default (evomerge.study.breaker)


class BudgetConfig(_Strict):
    evaluations: int | None = Field(default=None, ge=1)
    wall_time_s: float | None = Field(default=None, gt=0)
    # stop the run when its first N candidates (of this process, none ever successful) fail with one error
    stop_after_first_failures: int | None = Field(default=FIRST_FAILURES, ge=1)

    @model_validator(mode="after")
    def _some_budget(self) -> BudgetConfig:
        if self.evaluations is None and self.wall_time_s is None:
            raise ValueError("set 'evaluations' and/or 'wall_time_s'")
        return self


class RunnerConfig(_Strict):
    # remote: scored by clients of `evomerge serve` (ask/tell over HTTP); the study has no runner of its own
    type: Literal["local", "function", "ray", "remote"] = "local"
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1)
    target: str | None = None  # function runner: "package.module:function"
    storage_dtype: Literal["float32", "bfloat16"] = "float32"
    # the scored model instance's dtype; auto: the sources' (a bf16 family is scored as the bf16 export)
    model_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # what the sources may hold on the device (auto: what is free beside the model), then pinned host memory
    # (GPU), then they are read from the memory-mapped files per candidate; sizes like 40GiB
    source_memory: str | None = "auto"
    host_memory: str | None = "auto"
    # ray runner
    address: str | None = None
    workers: int = Field(default=1, ge=1)
    gpus_per_worker: float = Field(default=0, ge=0)
    cpus_per_worker: float = Field(default=1, gt=0)
    max_in_flight: int | None = Field(default=None, ge=1)

    @field_validator("source_memory", "host_memory")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and v != "auto":
            from evomerge.errors import ConfigError
            from evomerge.exec.memory_plan import parse_bytes

            try:  # a typo is refused with the config, not at the first candidate
                parse_bytes(v, what="size")
            except ConfigError as exc:
                raise ValueError(f"{exc}, or auto") from None
        return v

    @model_validator(mode="after")
    def _target(self) -> RunnerConfig:
        if self.type == "function" and not self.target:
            raise ValueError("the function runner needs 'target: package.module:function'")
        return self


class BaselineConfig(_Strict):
    """A recipe reported beside the search's result (a source alone, an untuned merge)."""

    name: str
    recipe: dict[str, Any]


class RunConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sources: SourcesConfig | None = None
    space: dict[str, Any] | str
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    objectives: list[ObjectiveConfig] = Field(min_length=1)
    budget: BudgetConfig
    seed: int = 0
    storage: str | None = None  # default: sqlite file in the run folder; any SQLAlchemy URL; or journal:PATH
    output: str | None = None  # run folder; default runs/NAME
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    test_split: str | None = "test"  # the front (and baselines) are re-evaluated on it at the end
    reference_point: list[float] | None = None  # hypervolume reference, in objective units
    baselines: list[BaselineConfig] = Field(default_factory=list)
    racing: RacingConfig | None = None  # staged scoring with early stopping (evomerge.racing); None: off

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        scores_genomes = self.runner.type in ("function", "remote") or self.runner.target is not None
        if not scores_genomes and self.sources is None:
            raise ValueError("'sources' is required unless the runner is a function (or remote, or has a target)")
        if self.reference_point is not None and len(self.reference_point) != len(self.objectives):
            raise ValueError(f"reference_point has {len(self.reference_point)} values for "
                             f"{len(self.objectives)} objectives")
        return self

    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / self.name

    def resolved(self, base_dir: Path | None = None) -> RunConfig:
        """Paths made absolute (sources, tasks, space preset, output), so the stored config is self-contained."""

        def absolute(p: str | None) -> str | None:
            if p is None or "://" in p or p.startswith("journal:"):
                return p
            return str(Path(p).expanduser().resolve())

        data = self.model_dump()
        if self.sources is not None:
            data["sources"] = {"base": absolute(self.sources.base),
                               "models": [absolute(m) for m in self.sources.models]}
        data["objectives"] = [{**o, "task": absolute(o["task"])} for o in data["objectives"]]
        data["baselines"] = [{**b, "recipe": _recipe_paths_resolved(b["recipe"])} for b in data["baselines"]]
        if isinstance(self.space, str):
            data["space"] = absolute(self.space)
        data["output"] = absolute(str(self.run_dir()))
        if self.storage and self.storage.startswith("journal:"):
            data["storage"] = "journal:" + str(absolute(self.storage.removeprefix("journal:")))
        return RunConfig.model_validate(data)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("racing") is None:  # absent, as in the configs of runs made before racing existed
            data.pop("racing", None)
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        data = read_yaml(path, "run config")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>") -> RunConfig:
        return validate_mapping(cls, data, source=source, what="run config")


_MODEL_KEYS = ("model", "base_model")


def _recipe_paths_resolved(recipe: Any) -> Any:
    """A baseline recipe with every ``model``/``base_model`` path that exists here made absolute."""
    if isinstance(recipe, dict):
        out = {}
        for k, v in recipe.items():
            if k in _MODEL_KEYS and isinstance(v, str) and "://" not in v and Path(v).expanduser().exists():
                out[k] = str(Path(v).expanduser().resolve())
            else:
                out[k] = _recipe_paths_resolved(v)
        return out
    if isinstance(recipe, list):
        return [_recipe_paths_resolved(v) for v in recipe]
    return recipe
