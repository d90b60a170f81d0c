"""The config of a model-space evolution run (``evomerge evolve CONFIG``), validated with errors naming the key.

Where a recipe search (``evomerge run``) tunes a few merge coefficients, these runs evolve whole
parameter vectors: ``init.models`` are the genomes the population starts from (M2N2: random inits or
experts; CycleQD: the experts, as task vectors against ``init.base``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge.yamlfile import read_yaml, validate_mapping

CONFIG_FILE = "evolve.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InitConfig(_Strict):
    """Starting genomes: model folders, or a folder whose subfolders are model folders (``zoo/digits/random``)."""

    models: list[str] = Field(min_length=1)
    base: str | None = None  # task vectors are taken against it (CycleQD); M2N2 ignores it

    def expanded(self) -> list[Path]:
        out: list[Path] = []
        for m in self.models:
            p = Path(m)
            if p.is_dir() and not (p / "config.json").is_file():
                subs = sorted(d for d in p.iterdir() if (d / "config.json").is_file())
                if not subs:
                    raise ValueError(f"init.models: {p} is neither a model folder nor a folder of model folders")
                out.extend(subs)
            else:
                out.append(p)
        return out


class EvolveBudget(_Strict):
    children: int | None = Field(default=None, ge=1)  # evaluations, the initial genomes included
    wall_time_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> EvolveBudget:
        if self.children is None and self.wall_time_s is None:
            raise ValueError("set 'children' and/or 'wall_time_s'")
        return self


class EvolveRunner(_Strict):
    """Where children are scored: here, one at a time, or on Ray workers, as many at once as there are workers.

    Ray workers each hold one model and the fitness tasks; the driver keeps every worker busy and tells
    results as they arrive (``evomerge.evolve.driver``). Without ``address`` a private Ray instance on
    127.0.0.1 is started, as for ``evomerge run``.
    """

    type: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    max_in_flight: int | None = Field(default=None, ge=1)


class EvolveConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    algorithm: Literal["m2n2", "cycleqd"]
    options: dict[str, Any] = Field(default_factory=dict)
    init: InitConfig
    tasks: list[str] = Field(min_length=1)  # fitness task YAMLs; the search sees the train split only
    budget: EvolveBudget
    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1)
    snapshot_every_s: float = Field(default=30.0, ge=0)  # the journal covers the time in between
    runner: EvolveRunner = Field(default_factory=EvolveRunner)
    test_split: str | None = "test"
    output: str | None = None  # run folder; default runs/NAME

    @model_validator(mode="after")
    def _base(self) -> EvolveConfig:
        if self.algorithm == "cycleqd" and self.init.base is None:
            raise ValueError("cycleqd evolves task vectors: set init.base (the model the experts were tuned from)")
        return self

    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / self.name

    def resolved(self) -> EvolveConfig:
        """Paths made absolute, so the stored config works from any working directory."""

        def absolute(p: str) -> str:
            return str(Path(p).expanduser().resolve())

        data = self.model_dump()
        data["init"] = {"models": [absolute(m) for m in self.init.models],
                        "base": absolute(self.init.base) if self.init.base else None}
        data["tasks"] = [absolute(t) for t in self.tasks]
        data["output"] = absolute(str(self.run_dir()))
        return EvolveConfig.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> EvolveConfig:
        return validate_mapping(cls, read_yaml(path, "evolve config"), source=str(path), what="evolve config")
