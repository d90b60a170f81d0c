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
    """Scores a candidate; implementations are built from YAML by ``load_task``.

    Racing (``evomerge.racing``) also uses, where a kind has them: ``size(split)`` (examples in a split),
    ``evaluate(..., indices=...)`` (score only those examples: the result's ``per_example`` follows
    ``indices``), ``per_example_sign`` (the objective is this sign times the mean of ``per_example``, over
    any subset), ``score_range`` (bounds of one per-example score, None: unknown) and ``race_refusal`` (why
    a kind cannot be scored in stages; None: it can).
    """

    name: str
    objective_name: str
    direction: Direction

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult: ...


def check_indices(task: str, split: str, indices: Any, n: int) -> np.ndarray | None:
    """``indices`` (a subset of a split's examples, for staged scoring) as int64, or a FitnessError naming the task."""
    if indices is None:
        return None
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size):
        raise FitnessError(f"task '{task}' split '{split}': example indices must be distinct and in [0, {n}), "
                           f"got {idx.tolist()[:8]}...")
    return idx


def check_split(task: str, split: str, available: list[str] | tuple[str, ...]) -> None:
    """Raise a FitnessError naming the task and the splits it has."""
    if split not in available:
        raise FitnessError(
            f"task '{task}' has no split '{split}'; it has {', '.join(available)} "
            "(declare it under `data:` in the task YAML)"
        )
