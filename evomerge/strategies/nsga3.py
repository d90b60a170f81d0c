"""A vectorised NSGA-III (Deb & Jain 2014, doi:10.1109/TEVC.2013.2281535) for cheap vectorised objectives.

MAP (arXiv 2406.07529) runs NSGA-III on its surrogates, which cost microseconds for a whole
population: an Optuna study would spend all its time in bookkeeping, so this is a plain numpy
loop. Operators follow MAP's DEAP setup: (μ + λ) with λ = μ, each offspring either an SBX child
(probability 0.7, η = 20) or a polynomial mutant (η = 20, each gene with probability 1/d), both
bounded; survivors by non-dominated sorting, then Das–Dennis reference-point niching.
Everything is minimised; randomness comes only from the ``rng`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from math import comb

import numpy as np

Objectives = Callable[[np.ndarray], np.ndarray]
"""(n, d) decision vectors -> (n, m) objective values, to minimise."""


def das_dennis(m: int, p: int) -> np.ndarray:
    """All points of the unit simplex in R^m whose coordinates are multiples of 1/p (C(p+m−1, m−1) of them)."""
    if m == 1:
        return np.ones((1, 1))
    rows = []
    for bars in combinations(range(p + m - 1), m - 1):
        parts = np.diff(np.array([-1, *bars, p + m - 1])) - 1
        rows.append(parts / p)
    return np.array(rows, dtype=np.float64)


def reference_points(m: int, population: int) -> np.ndarray:
    """Das–Dennis points with the largest number of divisions p giving at most ``population`` points."""
    p = 1
    while comb(p + 1 + m - 1, m - 1) <= population:
        p += 1
    return das_dennis(m, p)


def non_dominated_ranks(f: np.ndarray) -> np.ndarray:
    """Front index of each row (0 = non-dominated), by peeling the dominance matrix."""
    n = f.shape[0]
    le = np.all(f[:, None, :] <= f[None, :, :], axis=2)
    lt = np.any(f[:, None, :] < f[None, :, :], axis=2)
    dominates = le & lt  # [i, j]: i dominates j
    count = dominates.sum(axis=0)
    ranks = np.full(n, -1)
    rank = 0
    current = np.flatnonzero(count == 0)
    while current.size:
        ranks[current] = rank
        count = count - dominates[current].sum(axis=0)
        count[ranks >= 0] = -1
        current = np.flatnonzero(count == 0)
        rank += 1
    return ranks


def _normalise(f: np.ndarray, first_front: np.ndarray) -> np.ndarray:
    """Translate by the ideal point, scale by the hyperplane intercepts of the extreme points (fallback: ranges)."""
    ideal = f.min(axis=0)
    t = f - ideal
    m = f.shape[1]
    weights = np.full((m, m), 1e-6) + np.eye(m) * (1 - 1e-6)
    asf = np.max(t[:, None, :] / weights[None, :, :], axis=2)  # (n, m)
    extremes = t[np.argmin(asf, axis=0)]
    worst = t[first_front].max(axis=0)
    try:
        plane = np.linalg.solve(extremes, np.ones(m))
        intercepts = 1.0 / plane
        if not np.all(np.isfinite(intercepts)) or np.any(intercepts <= 1e-10):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        intercepts = worst
    intercepts = np.where(intercepts <= 1e-10, np.maximum(t.max(axis=0), 1e-10), intercepts)
    return t / intercepts


def _associate(fn: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference line of each point and its perpendicular distance."""
    unit = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    proj = fn @ unit.T  # (n, r)
    dist2 = np.maximum(np.sum(fn**2, axis=1, keepdims=True) - proj**2, 0.0)
    nearest = np.argmin(dist2, axis=1)
    return nearest, np.sqrt(dist2[np.arange(fn.shape[0]), nearest])


def select(f: np.ndarray, n: int, refs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` survivors among the rows of ``f``: whole fronts, then niching on the last one."""
    ranks = non_dominated_ranks(f)
    order = np.argsort(ranks, kind="stable")
    sizes = np.cumsum(np.bincount(ranks))
    last = int(np.searchsorted(sizes, n))  # the front that overflows
    if sizes[last] == n:
        return order[:n]
    chosen = list(np.flatnonzero(ranks < last))
    candidates = np.flatnonzero(ranks == last)
    considered = np.concatenate([np.array(chosen, dtype=int), candidates])
    fn = _normalise(f[considered], np.flatnonzero(ranks[considered] == 0))
    niche, dist = _associate(fn, refs)
    k = len(chosen)
    rho = np.bincount(niche[:k], minlength=refs.shape[0]).astype(float)
    cand_niche, cand_dist = niche[k:], dist[k:]
    free = np.ones(candidates.size, dtype=bool)
    active = np.zeros(refs.shape[0], dtype=bool)
    active[np.unique(cand_niche)] = True
    while len(chosen) < n:
        masked = np.where(active, rho, np.inf)
        lowest = np.flatnonzero(masked == masked.min())
        j = int(lowest[rng.integers(lowest.size)])
        members = np.flatnonzero(free & (cand_niche == j))
        if members.size == 0:
            active[j] = False
            continue
        pick = members[np.argmin(cand_dist[members])] if rho[j] == 0 else members[rng.integers(members.size)]
        free[pick] = False
        chosen.append(int(candidates[pick]))
        rho[j] += 1
    return np.array(chosen)


def sbx(x1: np.ndarray, x2: np.ndarray, lo: np.ndarray, hi: np.ndarray, eta: float,
        rng: np.random.Generator) -> np.ndarray:
    """Bounded simulated binary crossover (Deb & Agrawal 1995), first child of each pair; each gene crosses w.p. ½."""
    n, d = x1.shape
    a, b = np.minimum(x1, x2), np.maximum(x1, x2)
    span = np.maximum(b - a, 1e-14)
    u = rng.random((n, d))

    def betaq(beta: np.ndarray) -> np.ndarray:
        alpha = 2.0 - beta ** (-(eta + 1))
        return np.where(u <= 1.0 / alpha, (u * alpha) ** (1 / (eta + 1)), (1.0 / (2.0 - u * alpha)) ** (1 / (eta + 1)))

    c1 = 0.5 * (a + b - betaq(1.0 + 2.0 * (a - lo) / span) * span)
    c2 = 0.5 * (a + b + betaq(1.0 + 2.0 * (hi - b) / span) * span)
    swap = rng.random((n, d)) < 0.5
    child = np.where(swap, c2, c1)
    cross = (rng.random((n, d)) <= 0.5) & (b - a > 1e-14)
    return np.clip(np.where(cross, child, x1), lo, hi)


def polynomial_mutation(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, eta: float, prob: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Bounded polynomial mutation (Deb & Goyal 1996), each gene with probability ``prob``."""
    span = hi - lo
    d1, d2 = (x - lo) / span, (hi - x) / span
    u = rng.random(x.shape)
    power = 1.0 / (eta + 1)
    low_side = (2 * u + (1 - 2 * u) * (1 - d1) ** (eta + 1)) ** power - 1
    high_side = 1 - (2 * (1 - u) + 2 * (u - 0.5) * (1 - d2) ** (eta + 1)) ** power
    delta = np.where(u < 0.5, low_side, high_side)
    mutate = rng.random(x.shape) < prob
    return np.clip(np.where(mutate, x + delta * span, x), lo, hi)


def nsga3(objectives: Objectives, lower: np.ndarray, upper: np.ndarray, *, rng: np.random.Generator,
          population: int = 100, generations: int = 150, crossover_prob: float = 0.7, eta: float = 20.0,
          n_objectives: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``objectives`` over the box; returns the final population's non-dominated ``(x, f)``, deduplicated."""
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    d = lo.size
    x = lo + rng.random((population, d)) * (hi - lo)
    f = np.asarray(objectives(x), dtype=np.float64)
    refs = reference_points(n_objectives or f.shape[1], population)
    for _ in range(generations):
        p1, p2 = rng.integers(population, size=(2, population))
        crossed = sbx(x[p1], x[p2], lo, hi, eta, rng)
        mutated = polynomial_mutation(x[p1], lo, hi, eta, 1.0 / d, rng)
        children = np.where((rng.random(population) < crossover_prob)[:, None], crossed, mutated)
        fc = np.asarray(objectives(children), dtype=np.float64)
        x_all, f_all = np.concatenate([x, children]), np.concatenate([f, fc])
        keep = select(f_all, population, refs, rng)
        x, f = x_all[keep], f_all[keep]
    front = non_dominated_ranks(f) == 0
    xf, ff = x[front], f[front]
    _, first = np.unique(xf, axis=0, return_index=True)
    first = np.sort(first)
    return xf[first], ff[first]
