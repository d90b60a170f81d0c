"""MM-MO's weak-to-strong step (Li et al., arXiv 2407.00487): pick the top evaluated configurations,
then mix each acquisition candidate with a DE/rand/1 mutant of them.

Pure numpy on minimisation-form objective values; the strategy (``mobo``) owns the RNG and the box.

* ``elite`` — the "top-5": non-dominated sorting first (Deb et al. 2002), the front that does not
  fit whole is cut by exclusive hypervolume contribution (largest first) on objectives min-max
  normalised over the evaluated points, reference point 1.1. The authors' code ranks by the plain
  sum of the task accuracies instead; a sum needs commensurate units and ignores the sparsity
  objective, while the rank/contribution order is unit-free and uses every objective.
* ``de_rand_1`` — mutant ``v = clip(a + F (b − c))`` from three distinct elite members, binomial
  crossover with probability CR, one gene forced from the mutant only when no gene crossed (as in the
  authors' code; textbook DE forces one always). F = CR = 0.5 in the paper.
"""

from __future__ import annotations

import numpy as np


def nondominated_ranks(f: np.ndarray) -> np.ndarray:
    """Front index of every row of ``f`` (minimisation): 0 for the non-dominated set, 1 for the next..."""
    f = np.asarray(f, dtype=np.float64)
    n = len(f)
    ranks = np.full(n, -1, dtype=np.int64)
    remaining = np.arange(n)
    rank = 0
    while remaining.size:
        sub = f[remaining]
        dominated = np.array([np.any(np.all(sub <= p, axis=1) & np.any(sub < p, axis=1)) for p in sub])
        ranks[remaining[~dominated]] = rank
        remaining = remaining[dominated]
        rank += 1
    return ranks


def hypervolume(f: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by the rows of ``f`` (minimisation) inside the box bounded by ``ref``."""
    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

    f = np.asarray(f, dtype=np.float64)
    inside = f[np.all(f < ref, axis=1)]
    if not len(inside):
        return 0.0
    # BoTorch maximises: negate both
    part = DominatedPartitioning(ref_point=torch.as_tensor(-ref), Y=torch.as_tensor(-inside))
    return float(part.compute_hypervolume())


def hypervolume_contributions(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exclusive contribution of each row: HV(all) − HV(all but that row)."""
    f = np.asarray(f, dtype=np.float64)
    whole = hypervolume(f, ref)
    return np.array([whole - hypervolume(np.delete(f, i, axis=0), ref) for i in range(len(f))])


def elite(f: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best rows of ``f`` (minimisation), best first: by front, then by HV contribution."""
    f = np.asarray(f, dtype=np.float64)
    if len(f) <= k:
        order = np.argsort(nondominated_ranks(f), kind="stable")
        return order
    lo, hi = f.min(axis=0), f.max(axis=0)
    z = (f - lo) / np.where(hi > lo, hi - lo, 1.0)
    ranks = nondominated_ranks(z)
    chosen: list[int] = []
    for r in range(int(ranks.max()) + 1):
        members = np.flatnonzero(ranks == r)
        if len(chosen) + len(members) <= k:
            chosen += members.tolist()
        else:
            contrib = hypervolume_contributions(z[members], np.full(f.shape[1], 1.1))
            order = np.argsort(-contrib, kind="stable")
            chosen += members[order[: k - len(chosen)]].tolist()
        if len(chosen) == k:
            break
    return np.array(chosen, dtype=np.int64)


def de_rand_1_mix(x: np.ndarray, pool: np.ndarray, picks: np.ndarray, crossed: np.ndarray, *, f: float,
                  lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """One candidate ``x`` crossed with the mutant ``clip(a + f (b − c))``, ``(a, b, c) = pool[picks]``.

    ``crossed[j]`` says gene ``j`` comes from the mutant (the caller forces at least one).
    """
    a, b, c = pool[picks[0]], pool[picks[1]], pool[picks[2]]
    mutant = np.clip(a + f * (b - c), lower, upper)
    return np.where(crossed, mutant, x)


def de_rand_1(candidates: np.ndarray, pool: np.ndarray, rng: np.random.Generator, *, f: float, cr: float,
              lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Mix every candidate with a DE/rand/1 mutant of ``pool`` (rows: the elite), drawing from ``rng``.

    Per candidate, in this order: three distinct pool indices (``rng.choice(len(pool), 3, replace=False)``),
    ``d`` uniforms for the crossover mask (``< cr``), and, only when the mask is empty, one forced gene
    (``rng.integers(d)``). With fewer than three pool members there is no mutant: candidates are returned.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    pool = np.asarray(pool, dtype=np.float64)
    if len(pool) < 3:
        return candidates.copy()
    d = candidates.shape[1]
    out = []
    for x in candidates:
        picks = rng.choice(len(pool), 3, replace=False)
        crossed = rng.random(d) < cr
        if not crossed.any():
            crossed[rng.integers(d)] = True
        out.append(de_rand_1_mix(x, pool, picks, crossed, f=f, lower=lower, upper=upper))
    return np.array(out, dtype=np.float64).reshape(candidates.shape)
