"""Choosing from a front: one model by a preference vector, or a few spread-out members to re-evaluate.

MAP (arXiv 2406.07529) hands the user a whole front and lets a preference vector pick the model:
the argmax of the preference-weighted sum of the objectives. We normalise each objective to [0, 1]
over the candidates first (best = 1), so the weights mean the same whatever the objectives' units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evomerge.errors import ConfigError


def check_preference(preference: Sequence[float] | None, n_objectives: int, where: str) -> np.ndarray:
    """Validated non-negative weights (default: equal), normalised to sum 1."""
    if preference is None:
        return np.full(n_objectives, 1.0 / n_objectives)
    try:
        w = np.asarray([float(p) for p in preference], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: preference must be a list of {n_objectives} numbers, got {preference!r}") from None
    if w.size != n_objectives or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"{where}: preference must be {n_objectives} non-negative numbers (one per objective, "
                          f"not all zero), got {list(preference)}")
    return w / w.sum()


def oriented_unit(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Each objective mapped to [0, 1] over the rows, 1 = best; a constant objective maps to 0."""
    v = np.asarray(values, dtype=np.float64)
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    v = v * signs
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (v - lo) / span


def select_by_preference(values: np.ndarray, directions: Sequence[str], preference: Sequence[float] | None) -> int:
    """Index of the row maximising the preference-weighted sum of the normalised objectives (first on ties)."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.shape[0] == 0:
        raise ValueError("select_by_preference: no candidates")
    w = check_preference(preference, v.shape[1], "select_by_preference")
    return int(np.argmax(oriented_unit(v, directions) @ w))


def _unit_box(v: np.ndarray) -> np.ndarray:
    lo, hi = v.min(axis=0), v.max(axis=0)
    return (v - lo) / np.where(hi > lo, hi - lo, 1.0)


def _farthest_points(u: np.ndarray, chosen: list[int], k: int) -> list[int]:
    """Extend ``chosen`` by farthest-point sampling over the rows of ``u`` until ``k`` or only duplicates remain."""
    chosen = list(chosen)
    dist = (np.min(np.linalg.norm(u[:, None, :] - u[None, chosen, :], axis=2), axis=1) if chosen
            else np.full(u.shape[0], np.inf))
    while len(chosen) < k:
        i = int(np.argmax(dist))
        if dist[i] <= 1e-12:
            break
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(u - u[i], axis=1))
    return chosen


def spread_subset(values: np.ndarray, k: int, genomes: np.ndarray | None = None) -> np.ndarray:
    """Indices of up to ``k`` rows spread over the front (deterministic; ``values`` in minimisation form).

    Each objective's best first, then farthest-point sampling in the range-normalised objective space.
    When only points with equal predicted values are left (a saturated sigmoid predicts exactly 1.0 over a
    whole region), sampling goes on in the range-normalised ``genomes`` space: distinct models the surrogate
    cannot tell apart are still worth measuring; exact duplicates never are.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n <= k:
        return np.arange(n)
    chosen: list[int] = []
    for j in range(v.shape[1]):
        i = int(np.argmin(v[:, j]))
        if i not in chosen and len(chosen) < k:
            chosen.append(i)
    chosen = _farthest_points(_unit_box(v), chosen, k)
    if genomes is not None and len(chosen) < k:
        chosen = _farthest_points(_unit_box(np.asarray(genomes, dtype=np.float64)), chosen, k)
    return np.array(sorted(chosen))
