"""Objectives of a run: their names and directions, and the scalar single-objective strategies see.

The scalarisation is a weighted sum with each objective signed so that larger
is better; single-objective strategies maximise it. A failed candidate has
no value: strategies apply their own documented penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

from evomerge.fitness import FitnessTask, load_task
from evomerge.study.config import RunConfig


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str
    weight: float = 1.0

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "maximize" else -1.0


def load_objectives(config: RunConfig) -> tuple[list[Objective], list[FitnessTask]]:
    """The run's objectives and, for model runners, the fitness tasks that compute them."""
    objectives, tasks = [], []
    for spec in config.objectives:
        if spec.task is not None:
            task = load_task(spec.task)
            tasks.append(task)
            objectives.append(Objective(spec.name or task.objective_name, spec.direction or task.direction,
                                        spec.weight))
        else:
            assert spec.name is not None and spec.direction is not None
            objectives.append(Objective(spec.name, spec.direction, spec.weight))
    return objectives, tasks


def scalarize(values: dict[str, float], objectives: list[Objective]) -> float:
    """Weighted mean of the objectives, each signed so that larger is better."""
    total = sum(o.weight for o in objectives) or 1.0
    return sum(o.weight * o.sign * values[o.name] for o in objectives) / total
