"""Bayesian MAP (Li et al., arXiv 2406.07529, "BMAP"): spend the evaluations where the surrogate is wrong.

Start from a smaller initial design than MAP, then for a few rounds: refit the surrogates on every
told point; bin the told coefficient vectors by their hyperspherical angles (the direction of c —
which mixture of the tasks — matters more than its length); score each bin by the surrogate's
squared error on its points, mean + 0.5·std; draw the next points' bins from a softmax of the scores
at temperature 0.07, each point at a uniform angle inside its bin and radius r ~ U(0.2, 0.8).
Finally fit once more, run NSGA-III and re-evaluate the amortized front, as MAP does.

Faithful to the authors' code where the paper is silent: angles are binned over [0, π/2] per
angular coordinate, 4 bins per coordinate for d < 4 and 2 beyond; a bin without points scores −∞
(never sampled). One deviation: the code's half-open bins drop points at angle exactly π/2 (such as
the one-hot vector e_d); we close the last bin so they count. The per-point error is the mean over
objectives of the squared error; the bin std is the plain standard deviation of those errors (the
code estimates it from 30 random 80 % subsets, which needs a stream of extra random numbers and
converges to a similar value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.strategies.base import Problem
from evomerge.strategies.map_design import initial_design, unit_to_box
from evomerge.strategies.map_surrogate import MAPStrategy, fit_surrogates
from evomerge.strategies.quadratic_surrogate import n_params


def hyperspherical(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles φ (n, d−1) and radii r of the rows of ``x``: φ_i = atan2(‖x_{i+1:}‖, x_i) (all in [0, π/2] for x ≥ 0)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    r = np.linalg.norm(x, axis=1)
    tail = np.sqrt(np.cumsum((x**2)[:, ::-1], axis=1)[:, ::-1])  # tail[:, i] = ‖x_{i:}‖
    return np.arctan2(tail[:, 1:], x[:, :-1]), r


def cartesian(phi: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inverse of ``hyperspherical``: x_1 = r cos φ_1, x_i = r Π_{j<i} sin φ_j cos φ_i, x_d = r Π sin φ_j."""
    phi = np.atleast_2d(np.asarray(phi, dtype=np.float64))
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    n = phi.shape[0]
    sin_prod = np.concatenate([np.ones((n, 1)), np.cumprod(np.sin(phi), axis=1)], axis=1)  # (n, k+1)
    cos = np.concatenate([np.cos(phi), np.ones((n, 1))], axis=1)
    return r[:, None] * sin_prod * cos


def default_angle_bins(dim: int) -> int:
    """The authors' choice: 4 bins per angle below 4 tasks, 2 from there on."""
    return 4 if dim < 4 else 2


def angle_bin(phi: np.ndarray, n_bins: int) -> np.ndarray:
    """Flat bin index of each row's angles (n_bins per angle over [0, π/2]); −1 outside that quadrant."""
    phi = np.atleast_2d(phi)
    width = (np.pi / 2) / n_bins
    idx = np.floor(phi / width).astype(int)
    idx = np.where(np.isclose(phi, np.pi / 2), n_bins - 1, idx)  # close the last bin (see module docstring)
    inside = np.all((idx >= 0) & (idx < n_bins), axis=1)
    flat = np.zeros(phi.shape[0], dtype=int)
    for j in range(phi.shape[1]):
        flat = flat * n_bins + np.clip(idx[:, j], 0, n_bins - 1)
    return np.where(inside, flat, -1)


def bin_scores(bins: np.ndarray, errors: np.ndarray, n_bins_total: int, std_weight: float = 0.5) -> np.ndarray:
    """mean + ``std_weight``·std of the errors in each bin; −∞ for a bin without points."""
    scores = np.full(n_bins_total, -np.inf)
    for b in range(n_bins_total):
        e = errors[bins == b]
        if e.size:
            scores[b] = e.mean() + std_weight * e.std()
    return scores


def sample_points(scores: np.ndarray, n_bins: int, n_angles: int, n: int, temperature: float,
                  radius: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``n`` points: bins from softmax(scores / T), angles uniform in the bin, radius uniform in ``radius``."""
    z = (scores - scores[np.isfinite(scores)].max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    chosen = rng.choice(scores.size, size=n, p=p)
    width = (np.pi / 2) / n_bins
    idx = np.stack(np.unravel_index(chosen, (n_bins,) * n_angles), axis=1) if n_angles else np.zeros((n, 0), int)
    phi = (idx + rng.random((n, n_angles))) * width
    r = rng.uniform(radius[0], radius[1], size=n)
    return cartesian(phi, r)


class BayesianMAPStrategy(MAPStrategy):
    """Bayesian MAP: a small design, ``rounds`` × ``points_per_round`` adaptive points, then MAP's front."""

    name: ClassVar[str] = "bayes-map"

    def __init__(self, problem: Problem, *, seed: int, n_initial: int | None = None, rounds: int = 2,
                 points_per_round: int = 3, angle_bins: int | None = None, temperature: float = 0.07,
                 radius: Sequence[float] = (0.2, 0.8), std_weight: float = 0.5, front_size: int = 20,
                 population: int = 100, generations: int = 150, coef_range: Sequence[float] = (-3.0, 3.0),
                 warp: str | Sequence[str] = "auto", fit: str = "warped",
                 preference: Sequence[float] | None = None) -> None:
        d = problem.dim
        super().__init__(problem, seed=seed, n_initial=n_params(d) + d if n_initial is None else n_initial,
                         front_size=front_size, population=population, generations=generations,
                         coef_range=coef_range, warp=warp, fit=fit, preference=preference)
        if int(rounds) != rounds or rounds < 0:
            raise ConfigError(f"{self.name}: rounds must be an integer >= 0, got {rounds!r}")
        if int(points_per_round) != points_per_round or points_per_round < 1:
            raise ConfigError(f"{self.name}: points_per_round must be an integer >= 1, got {points_per_round!r}")
        self.angle_bins = default_angle_bins(d) if angle_bins is None else angle_bins
        if int(self.angle_bins) != self.angle_bins or self.angle_bins < 1:
            raise ConfigError(f"{self.name}: angle_bins must be an integer >= 1, got {angle_bins!r}")
        if not temperature > 0:
            raise ConfigError(f"{self.name}: temperature must be > 0, got {temperature!r}")
        try:
            r_lo, r_hi = (float(v) for v in radius)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name}: radius must be [low, high], got {radius!r}") from None
        if not 0 <= r_lo <= r_hi:
            raise ConfigError(f"{self.name}: radius must satisfy 0 <= low <= high, got {list(radius)}")
        self.rounds, self.points_per_round = int(rounds), int(points_per_round)
        self.temperature, self.radius, self.std_weight = float(temperature), (r_lo, r_hi), float(std_weight)
        self.angle_bins = int(self.angle_bins)

    def _advance(self) -> None:
        p = self.problem
        if self._stage == 0:
            self._plan(unit_to_box(initial_design(p.dim, self.n_initial, self._rng()), p.lower, p.upper))
        elif self._stage <= self.rounds:
            self._plan(unit_to_box(self._adaptive_points(), p.lower, p.upper))
        elif self._stage == self.rounds + 1:
            self._plan_front(tag=0)
        else:
            self._finished = True
        self._stage += 1

    def _adaptive_points(self) -> np.ndarray:
        """One round: refit, score the angle bins by surrogate error, sample ``points_per_round`` points."""
        x, y = self._known()
        d = self.problem.dim
        if x.shape[0] == 0:  # everything failed so far: nothing to learn from, sample uniformly
            scores = np.zeros(self.angle_bins ** (d - 1))
        else:
            self.surrogates = fit_surrogates(x, y, self.problem.directions, self.opts.warps, self.opts.fit)
            pred = np.stack([s(x) for s in self.surrogates], axis=1)
            errors = np.mean((pred - y) ** 2, axis=1)
            bins = angle_bin(hyperspherical(x)[0], self.angle_bins)
            scores = bin_scores(bins, errors, self.angle_bins ** (d - 1), self.std_weight)
            if not np.any(np.isfinite(scores)):
                scores = np.zeros_like(scores)
        return sample_points(scores, self.angle_bins, d - 1, self.points_per_round, self.temperature,
                             self.radius, self._rng())
