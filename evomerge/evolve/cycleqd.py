"""CycleQD: cyclic quality-diversity over task vectors (Kuroki et al., arXiv 2410.14735).

K tasks give K MAP-Elites archives; archive k takes task k's score as quality and the other K−1
scores, binned, as behaviour characteristics. Generation t works on archive t mod K only (the
*cyclic* switch that lets one task at a time steer, with no data-mixing ratio to tune): two elites
of it are drawn by elite sampling, merged (crossover), mutated in their SVD basis, evaluated on all
K tasks and inserted into every archive they improve. The answer is the softmax-weighted merge of
the archives' best elites (``answer="best_mean"``, not in the paper: the elite with the best mean
score, which on the tinylm zoo is the better model; see bench/cycleqd_tinylm.py).

The genome is a task vector τ (float32, flat over a ``FlatLayout``) relative to the base θ₀; the
experts' task vectors are the first K children asked, so their scores go through ask/tell and the
journal like any other child, and they seed every archive and fix the bin ranges.

Defaults follow the paper (one child per generation, 15 bins over [0.85·worst, 1.15·best expert],
ω ~ N(1, 0.03²), w ~ U[0, 0.3]^r on the child's own singular values, elite sampling on the scores
into [0.5, 0.8], softmax over the best elites' qualities). The official code
(github.com/SakanaAI/CycleQD) differs in places; each difference is an option:
``mutation="svd_expert"`` with ``svd_scale=0.1`` (the code perturbs along the SVD of the quality
task's *expert* task vector), ``sampling="elite_code"`` (its normalisation of cell indices into
[0.5, 1.3]), ``sampling="uniform"`` and ``mutation="gaussian"`` (its default config),
``crossover_sigma=0.01`` and ``bin_ranges=[(0, 0.45), ...]`` (its fixed per-task ranges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.evolve.base import Child, EvolutionError, ModelEvolution, restore_rng, rng_state
from evomerge.evolve.cycleqd_archive import CycleArchives
from evomerge.evolve.cycleqd_ops import (
    bin_ranges,
    crossover,
    elite_probabilities,
    elite_probabilities_code,
    pick_two,
    softmax,
    svd_perturbation,
)
from evomerge.evolve.flat import FlatEntry, FlatLayout

MUTATIONS = ("svd", "svd_expert", "gaussian", "none")
SAMPLINGS = ("elite", "elite_code", "uniform")
ANSWERS = ("softmax", "best_mean")


class CycleQD(ModelEvolution):
    """CycleQD over task vectors; ``experts[k]`` is the task vector of the expert of task k."""

    name: ClassVar[str] = "cycleqd"

    def __init__(self, layout: FlatLayout, experts: Sequence[np.ndarray], *, seed: int = 0,
                 n_tasks: int | None = None, n_bins: int = 15, bin_margin: tuple[float, float] = (0.85, 1.15),
                 bin_ranges: Sequence[tuple[float, float]] | None = None, crossover_sigma: float = 0.03,
                 mutation: str = "svd", svd_scale: float = 0.3, gaussian_std: float = 3e-4,
                 sampling: str = "elite", elite_range: tuple[float, float] = (0.5, 0.8),
                 temperature: float = 1.0, answer: str = "softmax") -> None:
        n_tasks = len(experts) if n_tasks is None else int(n_tasks)
        super().__init__(n_scores=n_tasks)
        if not experts:
            raise ConfigError("cycleqd: needs the experts' task vectors to seed its archives")
        self.layout = layout
        self.experts = [self._frozen(e, f"expert {i}") for i, e in enumerate(experts)]
        if mutation not in MUTATIONS:
            raise ConfigError(f"cycleqd: mutation must be one of {list(MUTATIONS)}, got {mutation!r}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"cycleqd: sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        if answer not in ANSWERS:
            raise ConfigError(f"cycleqd: answer must be one of {list(ANSWERS)}, got {answer!r}")
        if mutation == "svd_expert" and len(experts) != n_tasks:
            raise ConfigError(f"cycleqd: mutation 'svd_expert' needs one expert per task ({n_tasks}), "
                              f"got {len(experts)}")
        if n_bins < 1 or crossover_sigma < 0 or svd_scale < 0 or gaussian_std < 0 or temperature <= 0:
            raise ConfigError("cycleqd: n_bins must be >= 1, crossover_sigma, svd_scale and gaussian_std >= 0, "
                              "temperature > 0")
        if bin_ranges is not None and len(bin_ranges) != n_tasks:
            raise ConfigError(f"cycleqd: bin_ranges has {len(bin_ranges)} (lo, hi) pairs, expected {n_tasks}")
        self.n_bins, self.bin_margin, self.fixed_ranges = int(n_bins), tuple(bin_margin), bin_ranges
        self.crossover_sigma, self.mutation, self.svd_scale = float(crossover_sigma), mutation, float(svd_scale)
        self.gaussian_std, self.sampling, self.elite_range = float(gaussian_std), sampling, tuple(elite_range)
        self.temperature, self.answer = float(temperature), answer
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.archives = CycleArchives(n_tasks, self.n_bins)
        self.expert_scores: dict[int, np.ndarray] = {}
        self._mutated = [e for e in layout.matrices() if "norm" not in e.name]

    def _frozen(self, vector: np.ndarray, what: str) -> np.ndarray:
        v = np.asarray(vector)
        if v.shape != (self.layout.size,) or v.dtype != np.float32:
            raise ConfigError(f"cycleqd: {what} is a {v.dtype} array of shape {v.shape}; the layout needs float32 "
                              f"({self.layout.size},)")
        v = v.view()
        v.flags.writeable = False
        return v

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    # -- ask -------------------------------------------------------------------------------------
    def can_ask(self) -> bool:
        """Experts any time; children once every expert is scored (the bin ranges come from them)."""
        return self.n_asked < self.n_experts or self.n_told >= self.n_experts

    def _make_child(self, index: int) -> Child:
        if index < self.n_experts:
            return Child(index, self.experts[index], {"expert": index})
        self._seed_archives()
        k = (index - self.n_experts) % self.n_scores  # the cyclic switch: one quality per generation
        elites = self.archives.elites(k)
        if not elites:
            raise EvolutionError(f"cycleqd: archive {k} is empty (every expert's evaluation failed?); "
                                 "cannot make a child")
        ids = [i for _, i in elites]
        first, second = pick_two(self._sampling_probabilities(k, elites), self.rng.random(), self.rng.random())
        omega = self.rng.normal(1.0, self.crossover_sigma, size=2)
        tau = crossover(self.archives.genomes[ids[first]], self.archives.genomes[ids[second]], omega)
        self._mutate(tau, k)
        return Child(index, tau, {"archive": k, "parents": (ids[first], ids[second]), "omega": omega.tolist()})

    def _sampling_probabilities(self, k: int, elites: list[tuple[tuple[int, ...], int]]) -> np.ndarray:
        scores = np.array([self.archives.scores[i] for _, i in elites])
        if self.sampling == "uniform":
            return np.full(len(elites), 1.0 / len(elites))
        if self.sampling == "elite_code":
            cells = np.array([c for c, _ in elites], dtype=np.float64).reshape(len(elites), -1)
            return elite_probabilities_code(scores[:, k], cells, *self.elite_range)
        return elite_probabilities(scores, *self.elite_range)

    def _mutate(self, tau: np.ndarray, k: int) -> None:
        """In place: per weight matrix (norms and 1-D tensors untouched), the configured mutation."""
        if self.mutation == "none":
            return
        if self.mutation == "gaussian":  # the code's default config: N(0, std) on every parameter
            for entry in self.layout.entries:
                view = self.layout.view(tau, entry)
                view += np.float32(self.gaussian_std) * self.rng.standard_normal(entry.shape, dtype=np.float32)
            return
        for entry in self._mutated:
            view = self.layout.view(tau, entry)
            w = self.rng.uniform(0.0, self.svd_scale, size=min(entry.shape))
            basis = self._expert_matrix(k, entry) if self.mutation == "svd_expert" else None
            view += svd_perturbation(view, w, basis).astype(np.float32)

    def _expert_matrix(self, k: int, entry: FlatEntry) -> np.ndarray:
        return self.layout.view(self.experts[k], entry)

    # -- tell ------------------------------------------------------------------------------------
    def _accept(self, child: Child, scores: np.ndarray) -> None:
        if child.index < self.n_experts:
            self.expert_scores[child.index] = scores
            if child.index == self.n_experts - 1:
                self._seed_archives(last_told=True)
            return
        self.archives.insert(child.index, self._frozen(child.genome, f"child {child.index}"), scores)

    def _seed_archives(self, *, last_told: bool = False, strict: bool = True) -> None:
        """Once every expert is told: fix the bin ranges from their scores and insert them (in order).

        Runs at the last expert's tell, or at the next ask when that expert failed (no ``_accept``).
        """
        if self.archives.ready or not (last_told or self.n_told >= self.n_experts):
            return
        if not self.expert_scores:
            if not strict:
                return
            raise EvolutionError("cycleqd: no expert was evaluated successfully, so there are no bin ranges and "
                                 "no elites; check failures.log in the run folder")
        if self.fixed_ranges is not None:
            lo, hi = (np.array(x, dtype=np.float64) for x in zip(*self.fixed_ranges, strict=True))
        else:
            lo, hi = bin_ranges(np.array([self.expert_scores[i] for i in sorted(self.expert_scores)]),
                                self.bin_margin)
        self.archives.set_ranges(lo, hi)
        for i in sorted(self.expert_scores):
            self.archives.insert(i, self.experts[i], self.expert_scores[i])

    # -- answer ----------------------------------------------------------------------------------
    def aggregation(self) -> tuple[list[int], np.ndarray]:
        """(elite ids, softmax weights): each archive's best elite, weighted by softmax of its quality."""
        self._seed_archives(strict=False)
        ids, qualities = [], []
        for k in range(self.n_scores):
            best = self.archives.best(k)
            if best is not None:
                ids.append(best)
                qualities.append(self.archives.scores[best][k])
        return ids, (softmax(np.array(qualities), self.temperature) if ids else np.zeros(0))

    def best_mean_elite(self) -> int | None:
        """The elite (of any archive) with the best mean score over the K tasks; ties: the earliest child."""
        self._seed_archives(strict=False)
        scores = self.archives.scores
        return max(scores, key=lambda i: (float(np.mean(scores[i])), -i)) if scores else None

    def best_genome(self) -> np.ndarray:
        """θ-task vector Σ_k softmax(f)_k τ_k over the archives' best elites (zeros, i.e. θ₀, before any).

        With ``answer="best_mean"`` (not the paper's): the single elite with the best mean score instead.
        """
        if self.answer == "best_mean":
            best = self.best_mean_elite()
            return np.zeros(self.layout.size, dtype=np.float32) if best is None else self.archives.genomes[best].copy()
        ids, weights = self.aggregation()
        out = np.zeros(self.layout.size, dtype=np.float32)
        for i, w in zip(ids, weights, strict=True):
            out += np.float32(w) * self.archives.genomes[i]
        return out

    # -- state -----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng), "archives": self.archives.state(),
                "expert_scores": dict(self.expert_scores)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.rng = restore_rng(state["rng"])
        self.archives = CycleArchives(self.n_scores, self.n_bins)
        self.archives.load(state["archives"])
        self.expert_scores = dict(state["expert_scores"])


def task_vector_evaluator(problem: Any, base: np.ndarray, split: str = "train") -> Callable[[Child], np.ndarray]:
    """child → problem.score(θ₀ + τ).per_task: CycleQD's K qualities (``problem``: a ModelTasksProblem)."""
    base = np.asarray(base, dtype=np.float32)

    def evaluate(child: Child) -> np.ndarray:
        return problem.score(base + child.genome, split=split).per_task

    return evaluate


def build_cycleqd(problem: Any, base: np.ndarray, experts: Sequence[np.ndarray], *, seed: int = 0,
                  split: str = "train", **options: Any
                  ) -> tuple[CycleQD, Callable[[Child], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(algorithm, evaluate, to_weights) for experts given as *full weights*: task vectors are taken against base.

    ``problem`` is a ModelTasksProblem whose tasks are the K skills, in the experts' order.
    """
    base = np.asarray(base, dtype=np.float32)
    taus = [np.asarray(e, dtype=np.float32) - base for e in experts]
    n_tasks = len(problem.task_names)
    algorithm = CycleQD(problem.layout, taus, seed=seed, n_tasks=n_tasks, **options)
    return algorithm, task_vector_evaluator(problem, base, split), lambda tau: base + tau
