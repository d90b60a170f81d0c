"""M2N2 — Model Merging of Natural Niches (Abrantes, Lange & Tang, GECCO 2025, arXiv 2508.16204).

An archive of whole models (flat float32 genomes) evolves one child at a time:

* **crossover** — parents x, y; split point s ~ U{0..D−1} and mixing ratio w ~ U(0, 1); the
  interpolation coefficient is t_i = w for i < s and 1 − w from s on, and the child is the SLERP
  of x and y with *one* angle Ω between the two whole vectors (linear when sin Ω ≤ 1e-6). The
  split moves the merging boundary anywhere, inside a tensor too, instead of fixed layer groups.
* **mutation** — optional Gaussian noise (σ = 0.01 when evolving from scratch, none from experts).
* **resource competition** — every example j is a resource of capacity c_j = Σ_m s_mj + ε shared
  by the models that solve it; a model's fitness is Σ_j s_mj / c_j^α. α = 1 rewards solving what
  few others solve (natural niches), α = 0 is a plain GA on total score. After each child the worst
  of archive ∪ {child} under this fitness is dropped (ties: the archive member in the lowest slot,
  as in the official code's ``argmin``), so the child may not enter at all.
* **attraction** — parent 1 is drawn ∝ fitness, parent 2 ∝ Σ_j max(s_2j − s_1j, 0) / c_j^α: how
  much it solves that parent 1 does not (capacities of the archive alone).

The archive is one (N, D) float32 array plus one (N, n_examples) float64 score array; a child costs
two passes over D (crossover) plus an (N + 1) × n_examples competition — far below an evaluation.
The archive fills up to ``archive_size`` before any competition (the official code starts from
zero-score placeholders that any child replaces first, which is the same thing). The initial
genomes are the first children asked, so their scores arrive through the same ask/tell/journal path.

Where the official code (SakanaAI/natural_niches) differs: it has no ε (it divides by 1 where nobody
solves an example — ``epsilon=0`` here is exactly that); when no member complements parent 1 (or
no member scores anything) it samples from NaN probabilities, which JAX resolves to slot 0 — here
parent 2 is then drawn as without attraction (and an all-zero archive is sampled uniformly); its
angle is computed in float32, here in float64.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.evolve.base import Child, EvolutionError, ModelEvolution, restore_rng, rng_state

SIN_OMEGA_MIN = 1e-6
"""Below this sin Ω the parents are (anti)parallel and SLERP falls back to linear interpolation."""


def slerp_split(x: np.ndarray, y: np.ndarray, w: float, split: int) -> np.ndarray:
    """The M2N2 child of ``x`` and ``y``: SLERP with t = w before ``split``, t = 1 − w from it on.

    t is the weight of ``y`` (t = 0 gives x). Ω is the angle between the whole vectors, computed in
    float64; the child is float32 like the parents.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if x.shape != y.shape:
        raise EvolutionError(f"crossover of genomes of {x.size} and {y.size} entries; parents must share a layout")
    if not 0 <= split <= x.size:
        raise EvolutionError(f"split point {split} outside [0, {x.size}]")
    omega = slerp_angle(x, y)
    (ax, ay), (bx, by) = slerp_scales(omega, float(w)), slerp_scales(omega, 1.0 - float(w))
    child = np.empty_like(x)
    head, tail = slice(0, split), slice(split, None)
    np.multiply(x[head], ax, out=child[head])
    child[head] += ay * y[head]
    np.multiply(x[tail], bx, out=child[tail])
    child[tail] += by * y[tail]
    return child


def slerp_angle(x: np.ndarray, y: np.ndarray) -> float | None:
    """Ω between the whole vectors (float64), or None where SLERP degenerates to linear interpolation:
    a zero vector, or sin Ω ≤ 1e-6 (parallel or anti-parallel parents)."""
    # einsum, not BLAS dot: single-threaded (BLAS threads spin against the evaluation's) and the same
    # summation order in every process, so a resumed run makes the very same children
    xx, yy, xy = (float(np.einsum("i,i->", a, b, dtype=np.float64)) for a, b in ((x, x), (y, y), (x, y)))
    if xx == 0.0 or yy == 0.0:
        return None
    omega = math.acos(min(1.0, max(-1.0, xy / math.sqrt(xx * yy))))
    return None if math.sin(omega) <= SIN_OMEGA_MIN else omega


def slerp_scales(omega: float | None, t: float) -> tuple[float, float]:
    """(scale of x, scale of y) at t: sin((1−t)Ω)/sin Ω and sin(tΩ)/sin Ω, or 1 − t and t if linear."""
    if omega is None:
        return 1.0 - t, t
    sin = math.sin(omega)
    return math.sin((1.0 - t) * omega) / sin, math.sin(t * omega) / sin


def example_weights(scores: np.ndarray, alpha: float, epsilon: float) -> np.ndarray:
    """1 / c_j^α per example, c_j = Σ_m s_mj + ε; examples nobody solves weigh 0 (they add nothing)."""
    capacity = scores.sum(axis=0)
    weights = np.zeros_like(capacity)
    solved = capacity > 0
    weights[solved] = (capacity[solved] + epsilon) ** -alpha
    return weights


def competition_fitness(scores: np.ndarray, alpha: float = 1.0, epsilon: float = 0.0,
                        weights: np.ndarray | None = None) -> np.ndarray:
    """Resource-competition fitness Σ_j s_mj / c_j^α of every row of ``scores`` (models × examples)."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = example_weights(scores, alpha, epsilon) if weights is None else weights
    # elementwise product + row sums, not BLAS: the result (and so argmin ties) must not depend on
    # memory alignment or thread count, or a resumed run could drop a different model
    return (scores * weights).sum(axis=1)


def attraction_scores(scores: np.ndarray, parent: int, alpha: float = 1.0, epsilon: float = 0.0,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Σ_j max(s_kj − s_pj, 0) / c_j^α for every model k: what k solves that ``parent`` does not."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = example_weights(scores, alpha, epsilon) if weights is None else weights
    return (np.maximum(scores - scores[parent], 0.0) * weights).sum(axis=1)


def worst_of(archive_scores: np.ndarray, child_scores: np.ndarray, alpha: float = 1.0,
             epsilon: float = 0.0) -> int:
    """Index of the model dropped from archive ∪ {child}; ``len(archive_scores)`` means the child."""
    extended = np.vstack([archive_scores, np.asarray(child_scores, dtype=np.float64)[None, :]])
    return int(np.argmin(competition_fitness(extended, alpha, epsilon)))


def _digest(genomes: Sequence[np.ndarray]) -> str:
    """Fingerprint of the initial genomes: a resume with other starting models is refused, not silently wrong."""
    h = hashlib.sha256()
    for g in genomes:
        h.update(g.tobytes())
    return h.hexdigest()


class M2N2(ModelEvolution):
    """M2N2 over flat genomes; ``tell`` takes non-negative per-example scores (e.g. correctness, 0/1).

    ``initial`` genomes (e.g. two random inits, or the experts to merge) are asked first, in order.
    ``mutation_std`` is 0.01 in the paper's from-scratch runs and 0 when merging trained models;
    ``alpha=0`` with ``attraction=False`` is the paper's GA baseline; ``crossover=False`` makes the
    child a (mutated) copy of parent 1.
    """

    name: ClassVar[str] = "m2n2"

    def __init__(self, initial: Sequence[np.ndarray] | np.ndarray, n_scores: int, *, seed: int,
                 archive_size: int = 20, alpha: float = 1.0, crossover: bool = True, attraction: bool = True,
                 mutation_std: float = 0.0, epsilon: float = 1e-8) -> None:
        super().__init__(n_scores)
        initial = [np.ascontiguousarray(g, dtype=np.float32).reshape(-1) for g in initial]
        if not initial:
            raise EvolutionError("m2n2 needs at least one initial genome (random inits or the models to merge)")
        if len({g.size for g in initial}) != 1:
            raise EvolutionError(f"m2n2: initial genomes differ in size {sorted({g.size for g in initial})}")
        if archive_size < 1 or alpha < 0 or mutation_std < 0 or epsilon < 0:
            raise EvolutionError(f"m2n2: need archive_size >= 1, alpha >= 0, mutation_std >= 0, epsilon >= 0 "
                                 f"(got {archive_size}, {alpha}, {mutation_std}, {epsilon})")
        self.initial = initial
        self.dim = initial[0].size
        self.seed = int(seed)
        self.options = {"archive_size": int(archive_size), "alpha": float(alpha), "crossover": bool(crossover),
                        "attraction": bool(attraction), "mutation_std": float(mutation_std),
                        "epsilon": float(epsilon), "dim": self.dim, "initial_sha256": _digest(initial)}
        self.archive_size, self.alpha, self.epsilon = int(archive_size), float(alpha), float(epsilon)
        self.crossover, self.attraction, self.mutation_std = bool(crossover), bool(attraction), float(mutation_std)
        self.rng = np.random.default_rng(self.seed)
        self._genomes = np.empty((self.archive_size, self.dim), dtype=np.float32)
        self._scores = np.zeros((self.archive_size, self.n_scores), dtype=np.float64)
        self.size = 0  # filled slots

    # -- the archive ---------------------------------------------------------------------------
    @property
    def genomes(self) -> np.ndarray:
        """The archive's genomes (size × D, a read-only view)."""
        view = self._genomes[:self.size]
        view.flags.writeable = False
        return view

    @property
    def scores(self) -> np.ndarray:
        """The archive's per-example scores (size × n_scores, a read-only view)."""
        view = self._scores[:self.size]
        view.flags.writeable = False
        return view

    def fitness(self) -> np.ndarray:
        """Resource-competition fitness of the archive members (capacities of the archive alone)."""
        return competition_fitness(self._scores[:self.size], self.alpha, self.epsilon)

    def best_index(self) -> int:
        """Archive slot with the best mean score (the official code's reported model)."""
        if self.size == 0:
            raise EvolutionError("m2n2: the archive is empty (no initial genome has been scored yet)")
        return int(np.argmax(self._scores[:self.size].mean(axis=1)))

    def best_genome(self) -> np.ndarray:
        return self._genomes[self.best_index()].copy()

    # -- one child -----------------------------------------------------------------------------
    def can_ask(self) -> bool:
        """Initial genomes any time; children only once every initial genome is scored (as in sequence)."""
        return self.n_asked < len(self.initial) or self.n_told >= len(self.initial)

    def _make_child(self, index: int) -> Child:
        if index < len(self.initial):
            return Child(index, self.initial[index].copy(), {"initial": index})
        if self.size == 0:
            raise EvolutionError("m2n2: every initial genome failed to evaluate, the archive is empty; "
                                 "check the failures log of the run")
        p1, p2 = self._parents()
        if self.crossover:
            split, w = int(self.rng.integers(0, self.dim)), float(self.rng.random())
            genome = slerp_split(self._genomes[p1], self._genomes[p2], w, split)
            info: dict[str, Any] = {"parents": [p1, p2], "split": split, "w": w}
        else:
            genome, info = self._genomes[p1].copy(), {"parents": [p1]}
        if self.mutation_std > 0:
            genome += self.rng.standard_normal(self.dim, dtype=np.float32) * np.float32(self.mutation_std)
        return Child(index, genome, info)

    def _parents(self) -> tuple[int, int]:
        """Parent 1 ∝ fitness; parent 2 ∝ attraction to it (or ∝ fitness without attraction)."""
        scores = self._scores[:self.size]
        weights = example_weights(scores, self.alpha, self.epsilon)
        fitness = competition_fitness(scores, weights=weights)
        p1 = self._draw(fitness)
        if not self.crossover:
            return p1, p1
        if self.attraction:
            pull = attraction_scores(scores, p1, weights=weights)
            if pull.sum() > 0:
                return p1, self._draw(pull)
            # nobody solves anything parent 1 misses: the official code draws from NaN probabilities
            # here; we fall back to the no-attraction rule
        return p1, self._draw(fitness)

    def _draw(self, weights: np.ndarray) -> int:
        """One index ∝ ``weights`` (uniform when they are all zero); zero weights are never drawn."""
        total = float(weights.sum())
        if not total > 0:
            return int(self.rng.integers(0, weights.size))
        cdf = np.cumsum(weights)
        return min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), weights.size - 1)

    def _accept(self, child: Child, scores: np.ndarray) -> None:
        if np.any(scores < 0):
            raise EvolutionError(f"m2n2: child {child.index} has negative per-example scores (min "
                                 f"{scores.min():g}); resource competition needs scores >= 0 such as "
                                 "correctness — use accuracy-like tasks, not losses")
        if self.size < self.archive_size:
            slot = self.size
            self.size += 1
        else:
            slot = worst_of(self._scores, scores, self.alpha, self.epsilon)
            if slot == self.archive_size:
                return  # the child is the worst: it never enters
        self._genomes[slot] = child.genome
        self._scores[slot] = scores

    # -- resume --------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng), "options": dict(self.options), "size": self.size,
                "genomes": self._genomes[:self.size].copy(), "scores": self._scores[:self.size].copy()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if state["options"] != self.options:
            diff = {k: (state["options"].get(k), v) for k, v in self.options.items() if state["options"].get(k) != v}
            raise EvolutionError(f"m2n2: the saved run was built with other options (saved, now): {diff}; "
                                 "rebuild the algorithm with the run's options to resume it")
        self.rng = restore_rng(state["rng"])
        self.size = int(state["size"])
        self._genomes[:self.size] = state["genomes"]
        self._scores[:self.size] = state["scores"]
