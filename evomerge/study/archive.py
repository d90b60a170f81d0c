"""The Pareto archive: non-dominated trials, hypervolume against a stated reference point, best per objective.

Hypervolume is Optuna's (WFG) on values turned into minimisation; the
reference point is the user's, or by default the worst value seen on each
objective pushed 10 % of its range further (stated in every report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * signs


def non_dominated(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Indices of the rows no other row dominates (duplicates all kept)."""
    v = to_minimization(values, directions)
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated_by = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        if dominated_by.any():
            keep[i] = False
    return np.flatnonzero(keep)


def default_reference_point(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Worst value per objective, 10 % of the observed range (or 0.1) beyond it, in objective units."""
    v = to_minimization(values, directions)
    worst, best = v.max(axis=0), v.min(axis=0)
    span = np.where(worst > best, worst - best, 1.0)
    ref_min = worst + 0.1 * span
    return to_minimization(ref_min[None, :], directions)[0]


def hypervolume(values: np.ndarray, directions: Sequence[str], reference_point: Sequence[float]) -> float:
    """Volume dominated by ``values`` and bounded by ``reference_point`` (both in objective units)."""
    from optuna._hypervolume import compute_hypervolume

    v = to_minimization(values, directions)
    ref = to_minimization(np.asarray(reference_point, dtype=np.float64)[None, :], directions)[0]
    inside = np.all(v < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(v[inside], ref, assume_pareto=False))


@dataclass
class Archive:
    """The front of a set of trials on ``objective_names``."""

    numbers: list[int]  # trial numbers, in input order
    values: np.ndarray  # (n, m)
    objective_names: list[str]
    directions: list[str]
    reference_point: np.ndarray

    @classmethod
    def of(cls, numbers: list[int], values: np.ndarray, objective_names: list[str], directions: list[str],
           reference_point: Sequence[float] | None = None) -> Archive:
        values = np.asarray(values, dtype=np.float64).reshape(len(numbers), len(objective_names))
        ref = (np.asarray(reference_point, dtype=np.float64) if reference_point is not None
               else default_reference_point(values, directions) if len(values) else np.zeros(len(directions)))
        return cls(numbers=numbers, values=values, objective_names=objective_names, directions=directions,
                   reference_point=ref)

    @property
    def front(self) -> list[int]:
        if not self.numbers:
            return []
        return [self.numbers[i] for i in non_dominated(self.values, self.directions)]

    def hypervolume(self) -> float:
        if not self.numbers:
            return 0.0
        return hypervolume(self.values, self.directions, self.reference_point)

    def best_per_objective(self) -> dict[str, int]:
        out = {}
        for j, (name, d) in enumerate(zip(self.objective_names, self.directions, strict=True)):
            col = self.values[:, j]
            out[name] = self.numbers[int(np.argmax(col) if d == "maximize" else np.argmin(col))]
        return out
