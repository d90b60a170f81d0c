"""A small synthetic CycleQD problem (no model): a FlatLayout with two matrices, a 2-D "norm" and a 1-D tensor,
three expert task vectors and smooth per-task scores. Shared by the CycleQD tests and the kill -9 script."""

from __future__ import annotations

import numpy as np

from evomerge.evolve.base import Child
from evomerge.evolve.flat import FlatEntry, FlatLayout

LAYOUT = FlatLayout((FlatEntry("w1", (6, 4), 0), FlatEntry("norm.weight", (4,), 24), FlatEntry("w2", (3, 5), 28),
                     FlatEntry("odd_norm.scale", (2, 2), 43)))


def experts(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(LAYOUT.size)).astype(np.float32) for _ in range(3)]


def targets(seed: int = 0) -> np.ndarray:
    """Task k is best solved by its own expert plus half of the others (a multi-skill optimum)."""
    e = np.array(experts(seed), dtype=np.float64)
    return np.array([e[k] + 0.5 * (e.sum(0) - e[k]) for k in range(3)])


def scores(genome: np.ndarray, seed: int = 0) -> np.ndarray:
    d = ((np.asarray(genome, dtype=np.float64)[None, :] - targets(seed)) ** 2).sum(axis=1)
    return 1.0 / (1.0 + d / LAYOUT.size)


def evaluate(child: Child) -> np.ndarray:
    return scores(child.genome)
