"""Scoring a flat genome with the project's fitness tasks: load it into one resident model, run the tasks.

The model object is built once from a reference checkpoint (its architecture and tokenizer); each
genome is copied into its parameters in place, so scoring a child costs one parameter copy plus the
tasks themselves — no checkpoint is written or read per child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evomerge.evolve.flat import FlatLayout, flatten_checkpoint
from evomerge.fitness import evaluate_all, load_tasks


@dataclass(frozen=True)
class GenomeScores:
    """``per_example``: every task's examples concatenated, higher is better (what M2N2 competes on).

    ``per_task``: one higher-is-better number per task (the task's objective, negated for minimised
    ones): CycleQD's qualities and behaviour descriptors. ``objectives``: as the tasks report them.
    """

    per_example: np.ndarray
    per_task: np.ndarray
    objectives: dict[str, float]


class ModelTasksProblem:
    """Genomes of the architecture at ``reference`` scored by fitness task YAMLs on a chosen split."""

    def __init__(self, reference: str | Path, tasks: Sequence[str | Path], *, device: str = "cpu") -> None:
        from evomerge.models import load_model

        self.reference = Path(reference)
        self.model, self.tokenizer = load_model(self.reference, device=device)
        self.layout = FlatLayout.from_model(self.model)
        self.tasks = load_tasks(tasks)
        self.task_names = tuple(t.name for t in self.tasks)
        self._signs = np.array([1.0 if t.direction == "maximize" else -1.0 for t in self.tasks])

    def genome_of(self, path: str | Path) -> np.ndarray:
        """The flat vector of a checkpoint with this problem's architecture (errors name the tensor)."""
        vector, _ = flatten_checkpoint(path, self.layout)
        return vector

    def score(self, genome: np.ndarray, split: str = "train") -> GenomeScores:
        self.layout.load_into(self.model, genome)
        with torch.inference_mode():
            results = evaluate_all(self.tasks, self.model, self.tokenizer, split=split)
        ordered = [results[name] for name in self.task_names]
        objectives = {k: v for r in ordered for k, v in r.objectives.items()}
        per_task = np.array([r.objectives[t.objective_name] for r, t in zip(ordered, self.tasks, strict=True)])
        return GenomeScores(per_example=np.concatenate([r.per_example for r in ordered]),
                            per_task=per_task * self._signs, objectives=objectives)
