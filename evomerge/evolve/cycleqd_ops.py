"""CycleQD's operators as pure functions on arrays (Kuroki et al., arXiv 2410.14735, §3).

Each function is one line of the paper: the behaviour-characteristic bins, the model-merging
crossover, the SVD-based mutation, elite sampling and the final softmax aggregation. They take and
return numpy arrays and draw no random numbers, so tests check them against hand computations and
``cycleqd.CycleQD`` only decides *which* arrays and random draws go in.
"""

from __future__ import annotations

import numpy as np
import torch

from evomerge.errors import ConfigError


def bin_ranges(expert_scores: np.ndarray, margin: tuple[float, float] = (0.85, 1.15)) -> tuple[np.ndarray, np.ndarray]:
    """Per-task BC range [0.85·worst expert, 1.15·best expert] (§4.1), from an (experts × tasks) score table.

    Written as ``worst − (1−0.85)|worst|`` and ``best + (1.15−1)|best|`` so that negated-loss scores
    (negative, higher is better) get a range that still contains every expert; for the paper's
    non-negative accuracies it is exactly the paper's formula. A degenerate range (every expert at
    the same score, e.g. all 0) is widened to width 1 so bins stay defined.
    """
    f = np.atleast_2d(np.asarray(expert_scores, dtype=np.float64))
    worst, best = f.min(axis=0), f.max(axis=0)
    lo = worst - (1.0 - margin[0]) * np.abs(worst)
    hi = best + (margin[1] - 1.0) * np.abs(best)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return lo, hi


def bin_index(x: np.ndarray | float, lo: np.ndarray | float, hi: np.ndarray | float, n_bins: int) -> np.ndarray:
    """Equal-width bin of ``x`` in [lo, hi), scores outside the range clipped into the first/last bin."""
    t = (np.asarray(x, dtype=np.float64) - lo) / (np.asarray(hi, dtype=np.float64) - lo)
    return np.clip(np.floor(t * n_bins), 0, n_bins - 1).astype(np.int64)


def cell_of(scores: np.ndarray, quality: int, lo: np.ndarray, hi: np.ndarray, n_bins: int) -> tuple[int, ...]:
    """The cell of archive ``quality``: the bins of every *other* task's score, in task order."""
    others = [i for i in range(len(scores)) if i != quality]
    bins = bin_index(np.asarray(scores)[others], np.asarray(lo)[others], np.asarray(hi)[others], n_bins)
    return tuple(int(b) for b in bins)


def crossover(tau1: np.ndarray, tau2: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Model-merging crossover: τ = (ω₁τ₁ + ω₂τ₂) / (ω₁ + ω₂) (§3, "model merging based crossover").

    Computed as c₁τ₁ + c₂τ₂ with the normalised coefficients in float32, chunk by chunk, so a 7B task
    vector needs no full-size temporaries beyond the child itself.
    """
    w1, w2 = float(omega[0]), float(omega[1])
    total = w1 + w2
    if total == 0.0:
        raise ValueError(f"crossover weights {w1}, {w2} sum to zero")
    c1, c2 = np.float32(w1 / total), np.float32(w2 / total)
    out = np.empty(tau1.shape, dtype=np.float32)
    for start in range(0, out.size, _CHUNK):
        end = start + _CHUNK
        np.multiply(tau1[start:end], c1, out=out[start:end])
        out[start:end] += c2 * tau2[start:end]
    return out


_CHUNK = 1 << 22


def svd_perturbation(matrix: np.ndarray, w: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """U diag(σ ⊙ w) Vᵀ for (U, σ, V) = SVD(basis or matrix): the SVD mutation's added component.

    The mutated matrix is ``matrix + svd_perturbation(matrix, w)``; with the child's own basis this is
    U diag(σ ⊙ (1 + w)) Vᵀ: every singular direction of the task vector is amplified by a random
    factor in [1, 1 + max w], which keeps the mutation inside the subspace the skills live in (§3).
    The SVD runs in torch (float64): it honours ``torch.set_num_threads``, where numpy's OpenBLAS
    spawns a thread per core and is 10-60x slower on a busy machine.
    """
    source = torch.from_numpy(np.array(matrix if basis is None else basis, dtype=np.float64))
    u, s, vt = torch.linalg.svd(source, full_matrices=False)
    w = torch.from_numpy(np.asarray(w, dtype=np.float64))
    if w.shape != s.shape:
        raise ValueError(f"mutation weights have shape {tuple(w.shape)}, the matrix has {s.numel()} singular values")
    return ((u * (s * w)) @ vt).numpy()


def elite_probabilities(scores: np.ndarray, low: float = 0.5, high: float = 0.8) -> np.ndarray:
    """Elite sampling (§3): P_j ∝ Π_i (low + norm(f_{j,i})·(high − low)) over the archive's elites.

    ``scores`` is (elites × tasks): every task's score, the archive's quality included; ``norm`` is
    min–max over the elites of the archive. A task on which all elites tie gives the same factor to
    each and cancels out.
    """
    f = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    span = f.max(axis=0) - f.min(axis=0)
    norm = np.divide(f - f.min(axis=0), span, out=np.zeros_like(f), where=span > 0)
    p = np.prod(low + norm * (high - low), axis=1)
    return p / p.sum()


def elite_probabilities_code(quality: np.ndarray, cells: np.ndarray, low: float = 0.5,
                             high: float = 0.8) -> np.ndarray:
    """The official code's elite sampler (``sampler/elite_sampler.py``), kept as an option.

    It normalises the quality and the *cell indices* (not the BC scores) as low + (v − min)·high/(max − min),
    i.e. into [0.5, 1.3] rather than the paper's [0.5, 0.8], and a column with max = min into ones.
    """
    cols = np.column_stack([np.asarray(quality, dtype=np.float64), np.asarray(cells, dtype=np.float64)])
    span = cols.max(axis=0) - cols.min(axis=0)
    scaled = np.divide((cols - cols.min(axis=0)) * high, span, out=np.zeros_like(cols), where=span > 0)
    factors = np.where(span > 0, low + scaled, 1.0)
    p = np.prod(factors, axis=1)
    return p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))


def pick_two(probabilities: np.ndarray, u1: float, u2: float) -> tuple[int, int]:
    """Two distinct parents by inverse CDF: the first from P, the second from P without the first.

    ``u1, u2`` are uniforms in [0, 1). With a single elite both parents are that elite (the child is
    then a mutation of it).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    first = _inverse_cdf(p, u1)
    if len(p) == 1:
        return first, first
    rest = p.copy()
    rest[first] = 0.0
    if rest.sum() <= 0:
        rest = np.where(np.arange(len(p)) == first, 0.0, 1.0)
    return first, _inverse_cdf(rest / rest.sum(), u2)


def _inverse_cdf(p: np.ndarray, u: float) -> int:
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(p) - 1))


def softmax(f: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(f / T): the weights of the final aggregation θ₀ + Σ_k softmax(f)_k τ_k (§3)."""
    if temperature <= 0:
        raise ConfigError(f"cycleqd: temperature must be > 0, got {temperature}")
    z = np.asarray(f, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()
