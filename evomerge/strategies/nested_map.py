"""Nested MAP (Li et al., arXiv 2406.07529, "NMMAP"): many tasks merged two at a time, each pair by a 2-D MAP.

With N tasks MAP needs (N+1)(N+2) evaluations; nested MAP merges the two current models closest in
their own tasks' score with a 2-D MAP (20 evaluations), picks one merge by the preference vector
(a group's weight is the sum of its tasks' weights), puts it back in place of the pair, and
repeats until one model is left.

Every stage stays inside the original task-arithmetic family: if group G's model is θ₀ + Σ_k g_k τ_k
(g supported on G's tasks), merging groups G and H with coefficients (a, b) gives
θ₀ + a(θ_G − θ₀) + b(θ_H − θ₀) = θ₀ + Σ_k (a g_k + b h_k) τ_k. So each candidate is an ordinary
genome ``a·g + b·h`` of the d-dimensional coefficient box and the ordinary Study evaluates it; a
stage's two objectives are the mean of each group's task objectives. Genome dimension i is task i's
coefficient and objective i that task's metric (``n_objectives == dim``, same order, one direction).

(a, b) is searched in [−3, 3]² (``coef_range``) intersected with the interval that keeps every
composed coefficient inside the box; when no such interval exists (e.g. a group's coefficients
have mixed signs and the box excludes negatives), or the box excludes 0 for tasks outside the
pair, the composed genome is **clipped** into the box — the evaluated model is then that clipped
genome, and the merged group carries its coefficients on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.strategies.base import Evaluated, Problem
from evomerge.strategies.map_design import initial_design, unit_to_box
from evomerge.strategies.map_surrogate import SurrogateOptions, amortized_front, fit_surrogates
from evomerge.strategies.planned import PlannedStrategy
from evomerge.strategies.preference import select_by_preference


def compose(g: np.ndarray, h: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Coefficients of θ₀ + a(θ_G − θ₀) + b(θ_H − θ₀) over the original task vectors: rows ``a·g + b·h``."""
    ab = np.atleast_2d(np.asarray(ab, dtype=np.float64))
    return ab[:, :1] * np.asarray(g)[None, :] + ab[:, 1:2] * np.asarray(h)[None, :]


def scale_interval(v: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[float, float]:
    """The scalars s with lower_k ≤ s·v_k ≤ upper_k wherever v_k ≠ 0 (lo > hi when there are none)."""
    lo, hi = -np.inf, np.inf
    for vk, lk, uk in zip(v, lower, upper, strict=True):
        if vk > 0:
            lo, hi = max(lo, lk / vk), min(hi, uk / vk)
        elif vk < 0:
            lo, hi = max(lo, uk / vk), min(hi, lk / vk)
    return lo, hi


def closest_pair(scores: Sequence[float]) -> tuple[int, int]:
    """The pair (i < j) with the smallest |s_i − s_j| (first in index order on ties; NaN scores pair last)."""
    best, pair = np.inf, (0, 1)
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            gap = abs(scores[i] - scores[j])
            gap = np.inf if np.isnan(gap) else gap
            if gap < best:
                best, pair = gap, (i, j)
    return pair


class NestedMAPStrategy(PlannedStrategy):
    """Nested MAP over d tasks: d single-task evaluations, then d − 1 pair merges of ``n_design`` + 1 each."""

    name: ClassVar[str] = "nested-map"

    def __init__(self, problem: Problem, *, seed: int, n_design: int = 20, population: int = 100,
                 generations: int = 150, coef_range: Sequence[float] = (-3.0, 3.0),
                 warp: str | Sequence[str] = "auto", fit: str = "warped",
                 preference: Sequence[float] | None = None) -> None:
        super().__init__(problem, seed=seed, preference=preference)
        d = problem.dim
        if problem.n_objectives != d or d < 2:
            raise ConfigError(f"{self.name}: needs one objective per task vector, in genome order (the genome has "
                              f"{d} coefficients, the problem {problem.n_objectives} objectives), and d >= 2")
        if len(set(problem.directions)) != 1:
            raise ConfigError(f"{self.name}: all objectives must have one direction (groups average them), got "
                              f"{list(problem.directions)}")
        if int(n_design) != n_design or n_design < 6:
            raise ConfigError(f"{self.name}: n_design must be an integer >= 6 (a 2-D quadratic has 6 parameters), "
                              f"got {n_design!r}")
        if not isinstance(warp, str):
            raise ConfigError(f"{self.name}: warp must be one name for every group ('auto' or sigmoid/softplus/"
                              f"identity), got {warp!r}")
        self.opts = SurrogateOptions(self.name, problem, front_size=1, population=population,
                                     generations=generations, coef_range=coef_range, warp=warp, fit=fit)
        self.coef_range = (float(coef_range[0]), float(coef_range[1]))
        self.n_design = int(n_design)
        self.direction = problem.directions[0]
        self._phase = "start"
        self._groups: list[dict[str, Any]] = []  # {"tasks": [..], "coef": (d,), "score": float}
        self._pair: tuple[int, int] | None = None
        self._design_ab: np.ndarray | None = None
        self._chosen: np.ndarray | None = None  # the genome picked at the current stage
        self.merges: list[dict[str, Any]] = []  # one record per stage, for reports

    # -- pieces ------------------------------------------------------------------------------------
    def _clip(self, x: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(x, self.problem.lower), self.problem.upper)

    def _group_means(self, y: np.ndarray, groups: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.stack([y[:, g["tasks"]].mean(axis=1) for g in groups], axis=1)

    def _ab_box(self, g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.coef_range
        bounds = []
        for v in (g, h):
            s_lo, s_hi = scale_interval(v, self.problem.lower, self.problem.upper)
            s_lo, s_hi = max(s_lo, lo), min(s_hi, hi)
            bounds.append((s_lo, s_hi) if s_lo < s_hi else (lo, hi))  # no feasible interval: clip later
        return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])

    def _advance(self) -> None:
        getattr(self, f"_phase_{self._phase}")()

    def _phase_start(self) -> None:
        self._plan(self._clip(np.eye(self.problem.dim)))
        self._phase = "pair"

    def _phase_pair(self) -> None:
        d = self.problem.dim
        if not self._groups:
            for i, genome in enumerate(self._clip(np.eye(d))):
                v = self._value(genome)
                coef = np.zeros(d)
                coef[i] = genome[i]
                self._groups.append({"tasks": [i], "coef": coef, "score": np.nan if v is None else float(v[i])})
        if len(self._groups) == 1:
            self._finished = True
            return
        self._pair = closest_pair([g["score"] for g in self._groups])
        ga, gb = (self._groups[i] for i in self._pair)
        lo, hi = self._ab_box(ga["coef"], gb["coef"])
        self._design_ab = unit_to_box(initial_design(2, self.n_design, self._rng()), lo, hi)
        self._plan(self._clip(compose(ga["coef"], gb["coef"], self._design_ab)))
        self._phase = "choose"

    def _phase_choose(self) -> None:
        assert self._pair is not None and self._design_ab is not None
        ga, gb = (self._groups[i] for i in self._pair)
        genomes = self._clip(compose(ga["coef"], gb["coef"], self._design_ab))
        ok = [i for i, g in enumerate(genomes) if self._value(g) is not None]
        lo, hi = self._ab_box(ga["coef"], gb["coef"])
        directions = (self.direction, self.direction)
        if ok:
            ab = self._design_ab[ok]
            y = self._group_means(np.array([self._value(genomes[i]) for i in ok]), (ga, gb))
            surrogates = fit_surrogates(ab, y, directions, [self.opts.warps[0]] * 2, self.opts.fit)
            front_ab, front_y = amortized_front(surrogates, directions, lo, hi, self._rng(1),
                                                population=self.opts.population, generations=self.opts.generations)
            weights = [float(self.preference[ga["tasks"]].sum()), float(self.preference[gb["tasks"]].sum())]
            if sum(weights) == 0:
                weights = [1.0, 1.0]
            pick = select_by_preference(front_y, directions, weights)
            chosen_ab, predicted = front_ab[pick], [float(v) for v in front_y[pick]]
        else:  # every design point failed: keep the plain sum of the two models
            chosen_ab, predicted = np.clip(np.ones(2), lo, hi), [np.nan, np.nan]
        self._chosen = self._clip(compose(ga["coef"], gb["coef"], chosen_ab))[0]
        self.merges.append({"tasks": [list(ga["tasks"]), list(gb["tasks"])], "ab": [float(v) for v in chosen_ab],
                            "predicted": predicted})
        self._plan([self._chosen])
        self._phase = "merge"

    def _phase_merge(self) -> None:
        assert self._pair is not None and self._chosen is not None
        ga, gb = (self._groups[i] for i in self._pair)
        tasks = sorted([*ga["tasks"], *gb["tasks"]])
        coef = np.zeros(self.problem.dim)
        coef[tasks] = self._chosen[tasks]
        v = self._value(self._chosen)
        score = np.nan if v is None else float(np.mean(np.asarray(v)[tasks]))
        self._groups = [g for i, g in enumerate(self._groups) if i not in self._pair]
        self._groups.append({"tasks": tasks, "coef": coef, "score": score})
        self._pair, self._design_ab = None, None
        self._stage += 1
        self._phase = "pair"

    # -- results -------------------------------------------------------------------------------------
    def preferred(self) -> Evaluated | None:
        """The last merge's model once finished (the nested procedure's answer); before that, MAP's choice."""
        if self._finished and self._chosen is not None and self._value(self._chosen) is not None:
            return Evaluated(self._chosen.copy(), tuple(self._value(self._chosen) or ()))
        return super().preferred()

    def _extra_state(self) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "groups": [{"tasks": list(g["tasks"]), "coef": g["coef"].copy(), "score": g["score"]}
                       for g in self._groups],
            "pair": self._pair,
            "design_ab": None if self._design_ab is None else self._design_ab.copy(),
            "chosen": None if self._chosen is None else self._chosen.copy(),
            "merges": [dict(m) for m in self.merges],
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self._phase = state["phase"]
        self._groups = [{"tasks": list(g["tasks"]), "coef": np.array(g["coef"], dtype=np.float64),
                         "score": float(g["score"])} for g in state["groups"]]
        self._pair = None if state["pair"] is None else (int(state["pair"][0]), int(state["pair"][1]))
        self._design_ab = None if state["design_ab"] is None else np.array(state["design_ab"], dtype=np.float64)
        self._chosen = None if state["chosen"] is None else np.array(state["chosen"], dtype=np.float64)
        self.merges = [dict(m) for m in state["merges"]]
