"""What every fitness task returns and the protocol it follows.

A task maps (model, tokenizer) to named objectives *and* one score per example:
M2N2's resource competition and CycleQD's per-task archives (ALGORITHMS.md)
need the per-example vector, not only the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from evomerge.errors import FitnessError

Direction = Literal["maximize", "minimize"]
SPLITS = ("train", "validation", "test")


@dataclass
class TaskResult:
    """One task's scores for one candidate on one split.

    ``per_example`` is float64, one entry per example, higher is better (a loss
    task stores the negative loss there so that every strategy can treat the
    vector the same way); ``objectives`` keeps the task's own sign convention.
    """

    task: str
    split: str
    objectives: dict[str, float]
    per_example: np.ndarray
    n: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_example = np.asarray(self.per_example, dtype=np.float64).reshape(-1)
        if self.per_example.shape[0] != self.n:
            raise FitnessError(
                f"task '{self.task}': {self.per_example.shape[0]} per-example scores for n={self.n} examples"
            )


@runtime_checkable
class FitnessTask(Protocol):
    """Scores a candidate; implementations are built from YAML by ``load_task``."""

    name: str
    objective_name: str
    direction: Direction

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult: ...


def check_split(task: str, split: str, available: list[str] | tuple[str, ...]) -> None:
    """Raise a FitnessError naming the task and the splits it has."""
    if split not in available:
        raise FitnessError(
            f"task '{task}' has no split '{split}'; it has {', '.join(available)} "
            "(declare it under `data:` in the task YAML)"
        )
