"""MAP: Model merging with Amortized Pareto fronts (Li et al., arXiv 2406.07529).

Task arithmetic θ₀ + Σ c_i τ_i spans a low-dimensional family of models; near θ₀ every task metric
is close to a quadratic in c. MAP measures the metrics at a few coefficient vectors, fits one warped
quadratic per objective (``quadratic_surrogate``), runs NSGA-III on the surrogates (population 100,
c ∈ [−3, 3] — here intersected with the problem's box) and re-evaluates the resulting *amortized*
front for real. A preference vector then picks one model (``preferred()``).

As a Strategy: ``ask`` first returns the initial design — the d one-hot points plus grid points in
[0, 1]^d, (d+1)(d+2) in all (``map_design``) — then, once all are told, the amortized front (at most
``front_size`` members spread along it, genomes already evaluated skipped); once those are told the
strategy is ``finished``. The genome is c itself when the box contains [0, 1]^d (a ``ps`` space with
``task_arithmetic``: one weight per source, see ``search_spaces/ps_task_arithmetic.yaml``); on any
other box the surrogate is simply a quadratic in the genome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.strategies.base import Problem
from evomerge.strategies.map_design import initial_design, unit_to_box
from evomerge.strategies.nsga3 import nsga3
from evomerge.strategies.planned import PlannedStrategy
from evomerge.strategies.preference import spread_subset
from evomerge.strategies.quadratic_surrogate import FITS, WARPS, QuadraticSurrogate, auto_warp, fit_quadratic, n_params


def _signs(directions: Sequence[str]) -> np.ndarray:
    return np.array([1.0 if d == "minimize" else -1.0 for d in directions])


def fit_surrogates(x: np.ndarray, y: np.ndarray, directions: Sequence[str], warps: Sequence[str],
                   fit: str) -> list[QuadraticSurrogate]:
    """One surrogate per objective column of ``y``; ``warps`` entries may be ``auto``."""
    out = []
    for j, (direction, kind) in enumerate(zip(directions, warps, strict=True)):
        chosen = auto_warp(direction, y[:, j]) if kind == "auto" else kind
        out.append(fit_quadratic(x, y[:, j], chosen, fit=fit))
    return out


def amortized_front(surrogates: Sequence[QuadraticSurrogate], directions: Sequence[str], lower: np.ndarray,
                    upper: np.ndarray, rng: np.random.Generator, *, population: int,
                    generations: int) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-III on the surrogates over the box: the predicted front's ``(x, values)`` (values in ``directions``)."""
    signs = _signs(directions)

    def objectives(x: np.ndarray) -> np.ndarray:
        return np.stack([s(x) for s in surrogates], axis=1) * signs

    x, f = nsga3(objectives, lower, upper, rng=rng, population=population, generations=generations)
    return x, f * signs


class SurrogateOptions:
    """Validated options shared by MAP and its variants (errors name the strategy and the option)."""

    def __init__(self, name: str, problem: Problem, *, front_size: int, population: int, generations: int,
                 coef_range: Sequence[float], warp: str | Sequence[str], fit: str) -> None:
        m = problem.n_objectives
        if int(front_size) != front_size or front_size < 1:
            raise ConfigError(f"{name}: front_size must be an integer >= 1, got {front_size!r}")
        if int(population) != population or population < 4:
            raise ConfigError(f"{name}: population must be an integer >= 4, got {population!r}")
        if int(generations) != generations or generations < 1:
            raise ConfigError(f"{name}: generations must be an integer >= 1, got {generations!r}")
        try:
            lo, hi = (float(v) for v in coef_range)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: coef_range must be [low, high], got {coef_range!r}") from None
        lower, upper = np.maximum(problem.lower, lo), np.minimum(problem.upper, hi)
        if not lo < hi or np.any(lower >= upper):
            raise ConfigError(f"{name}: coef_range [{lo:g}, {hi:g}] does not overlap the search box "
                              f"[{problem.lower.min():g}, {problem.upper.max():g}] in every dimension")
        warps = [warp] * m if isinstance(warp, str) else list(warp)
        if len(warps) != m or any(w not in (*WARPS, "auto") for w in warps):
            raise ConfigError(f"{name}: warp must be 'auto' or one of {list(WARPS)}, or a list of {m} of those "
                              f"(one per objective), got {warp!r}")
        if fit not in FITS:
            raise ConfigError(f"{name}: fit must be one of {list(FITS)}, got {fit!r}")
        self.front_size, self.population, self.generations = int(front_size), int(population), int(generations)
        self.lower, self.upper = lower, upper
        self.warps, self.fit = warps, fit


class MAPStrategy(PlannedStrategy):
    """MAP (arXiv 2406.07529): initial design → quadratic surrogates → NSGA-III → re-evaluated amortized front."""

    name: ClassVar[str] = "map"

    def __init__(self, problem: Problem, *, seed: int, n_initial: int | None = None, front_size: int = 20,
                 population: int = 100, generations: int = 150, coef_range: Sequence[float] = (-3.0, 3.0),
                 warp: str | Sequence[str] = "auto", fit: str = "warped",
                 preference: Sequence[float] | None = None) -> None:
        super().__init__(problem, seed=seed, preference=preference)
        d = problem.dim
        self.opts = SurrogateOptions(self.name, problem, front_size=front_size, population=population,
                                     generations=generations, coef_range=coef_range, warp=warp, fit=fit)
        self.n_initial = (d + 1) * (d + 2) if n_initial is None else n_initial
        if int(self.n_initial) != self.n_initial or self.n_initial < n_params(d):
            raise ConfigError(f"{self.name}: n_initial must be an integer >= (d+1)(d+2)/2 = {n_params(d)} "
                              f"(the surrogate's parameter count for d = {d}), got {n_initial!r}")
        self.n_initial = int(self.n_initial)
        self.surrogates: list[QuadraticSurrogate] = []
        self.predicted: tuple[np.ndarray, np.ndarray] | None = None

    def _advance(self) -> None:
        p = self.problem
        if self._stage == 0:
            design = initial_design(p.dim, self.n_initial, self._rng())
            self._plan(unit_to_box(design, p.lower, p.upper))
            self._stage = 1
        elif self._stage == 1:
            self._plan_front(tag=0)
            self._stage = 2
        else:
            self._finished = True

    def _plan_front(self, tag: int) -> None:
        """Fit on everything told, run NSGA-III on the surrogates, queue a spread subset of the predicted front."""
        x, y = self._known()
        if x.shape[0] == 0:
            self.predicted = (np.zeros((0, self.problem.dim)), np.zeros((0, self.problem.n_objectives)))
            return
        self.surrogates = fit_surrogates(x, y, self.problem.directions, self.opts.warps, self.opts.fit)
        fx, fy = amortized_front(self.surrogates, self.problem.directions, self.opts.lower, self.opts.upper,
                                 self._rng(tag), population=self.opts.population, generations=self.opts.generations)
        keep = spread_subset(fy * _signs(self.problem.directions), self.opts.front_size, fx)
        self.predicted = (fx[keep], fy[keep])
        self._plan(fx[keep])

    def _extra_state(self) -> dict[str, Any]:
        return {"predicted": None if self.predicted is None else (self.predicted[0].copy(), self.predicted[1].copy()),
                "surrogates": [(s.theta.copy(), s.kind) for s in self.surrogates]}

    def _load_extra(self, state: dict[str, Any]) -> None:
        pred = state["predicted"]
        self.predicted = None if pred is None else (np.array(pred[0]), np.array(pred[1]))
        self.surrogates = [QuadraticSurrogate(np.array(t, dtype=np.float64), k) for t, k in state["surrogates"]]
