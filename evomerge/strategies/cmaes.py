"""CMA-ES (Hansen 2016, arXiv 1604.00772) with the evolutionary-merge paper's defaults (arXiv 2403.13187).

``cma``'s ``CMAEvolutionStrategy`` runs in normalised coordinates ``u ∈ [0, 1]^d`` with
``genome = lower + u · (upper − lower)``: x0 = 0.5 (the box centre, or ``problem.x0``), σ0 = 1/6 of
the box width, λ = 4 + ⌊3 ln d⌋, bounds through cma's ``bounds=[0, 1]`` option (its default
``BoundTransform``). ``sep-cma`` is the same with ``CMA_diagonal=True`` (Ros & Hansen 2008,
separable CMA-ES): O(d) memory and time per sample, for genomes of 10^4+ dimensions (the 19,210-dim
M2N2 digits genome, arXiv 2508.16204, needs ≈9 GB with a full covariance).

Randomness: every normal draw comes from the strategy's own ``np.random.Generator`` through cma's
``randn`` option (cma's ``seed`` is disabled, so numpy's global RNG is neither read nor reseeded).

Generation lock: cma updates once per generation, so ``ask`` hands out at most the untold rest of the
current generation of λ genomes, and the update happens when all λ have been told.

Failures (``None``, NaN, inf): the genome gets a penalty worse than every finite value seen so far
(``worst + 1 + |worst|`` in minimisation form, or 1e30 before any finite value), so the generation
completes; CMA-ES is rank-based, so this simply ranks failures last. Penalties never enter ``best()``.

Resume: the state holds the pickled ``es`` taken *before* the current generation was sampled, plus
which of its genomes were handed out and told. ``load_state_dict`` unpickles it and samples the
generation again, which reproduces it bit for bit (checked against the saved genomes). Re-sampling
rather than pickling the sampled generation matters across processes: cma keys its record of sent
solutions by ``hash(bytes)``, which Python salts per process.

Optional IPOP restarts (Auger & Hansen 2005): with ``restarts > 0``, when cma's own termination
criteria fire, a new run starts from a uniform random point with λ multiplied by ``incpopsize``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

with warnings.catch_warnings():  # cma warns at import when matplotlib is absent; plotting is not used here
    warnings.simplefilter("ignore")
    import cma

from evomerge.errors import ConfigError
from evomerge.strategies.base import Genome, Problem, Strategy, StrategyError, default_popsize, genome_key, in_box

FAILURE_PENALTY_BEFORE_ANY_VALUE = 1e30
_STATE_VERSION = 1


class _Randn:
    """cma's ``randn(*shape)`` drawn from our own Generator (picklable, unlike a lambda)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


class CMAStrategy(Strategy):
    """Full-covariance CMA-ES over the box; single objective, generation-locked."""

    name: ClassVar[str] = "cma"
    supports_async: ClassVar[bool] = False
    multi_objective: ClassVar[bool] = False
    diagonal: ClassVar[bool] = False

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        sigma0: float = 1.0 / 6.0,
        popsize: int | None = None,
        restarts: int = 0,
        incpopsize: float = 2.0,
        cma_options: dict[str, Any] | None = None,
    ) -> None:
        """``sigma0`` is a fraction of the box width; ``cma_options`` go to ``cma`` (not bounds/randn/seed)."""
        super().__init__(problem, seed=seed)
        if not sigma0 > 0:
            raise ConfigError(f"{self.name}: sigma0 must be > 0 (a fraction of the box width), got {sigma0}")
        if popsize is not None and popsize < 2:
            raise ConfigError(f"{self.name}: popsize must be >= 2, got {popsize}")
        if restarts < 0 or incpopsize < 1:
            raise ConfigError(f"{self.name}: restarts must be >= 0 and incpopsize >= 1")
        reserved = {"bounds", "randn", "seed", "CMA_diagonal", "popsize"} & set(cma_options or {})
        if reserved:
            raise ConfigError(f"{self.name}: cma_options may not set {sorted(reserved)}; use the strategy's options")
        if not self.diagonal and problem.dim > 5000:
            warnings.warn(
                f"cma: a full covariance on {problem.dim} dims needs {8 * problem.dim**2 / 1e9:.1f} GB per matrix; "
                "use 'sep-cma' for genomes this large",
                stacklevel=2,
            )
        self.sigma0 = float(sigma0)
        self.restarts = int(restarts)
        self.incpopsize = float(incpopsize)
        self._extra = dict(cma_options or {})
        self._width = problem.upper - problem.lower
        self._randn = _Randn(np.random.default_rng(self.seed))
        self._popsize = int(popsize) if popsize is not None else default_popsize(problem.dim)
        self._restarts_done = 0
        self._worst: float | None = None
        self._n_told = 0
        self._es = self._new_es((problem.start - problem.lower) / self._width)
        self._clear_generation()

    # -- cma plumbing -----------------------------------------------------------------------
    def _new_es(self, u0: np.ndarray) -> cma.CMAEvolutionStrategy:
        opts: dict[str, Any] = {
            "bounds": [0.0, 1.0],
            "popsize": self._popsize,
            "randn": self._randn,
            "seed": np.nan,  # never touch numpy's global RNG
            "CMA_diagonal": self.diagonal,
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
            "verb_filenameprefix": "",
            **self._extra,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cma.CMAEvolutionStrategy(np.array(u0, dtype=np.float64), self.sigma0, opts)

    def _clear_generation(self) -> None:
        self._es_before_ask: bytes | None = None
        self._raw: list[np.ndarray] = []  # what cma.ask returned (normalised), told back to cma as is
        self._genomes: list[np.ndarray] = []  # what the caller got (box coordinates)
        self._keys: list[bytes] = []
        self._handed = 0
        self._results: dict[int, float | None] = {}  # index -> minimisation value, None = failed

    def _sample_generation(self) -> None:
        self._es_before_ask = self._es.pickle_dumps()
        self._raw = [np.array(u, dtype=np.float64) for u in self._es.ask()]
        self._genomes = [in_box(self.problem, self.problem.lower + u * self._width) for u in self._raw]
        self._keys = [genome_key(g) for g in self._genomes]

    @property
    def popsize(self) -> int:
        """λ of the current run (doubles at each IPOP restart)."""
        return self._popsize

    @property
    def es(self) -> cma.CMAEvolutionStrategy:
        """The wrapped ``cma`` object (read-only use: mean, sigma, stop())."""
        return self._es

    # -- protocol -----------------------------------------------------------------------------
    def ask(self, n: int | None = None) -> list[Genome]:
        if not self._raw:
            self._sample_generation()
        remaining = len(self._raw) - self._handed
        k = min(self._check_ask_n(n, remaining), remaining)
        out = [g.copy() for g in self._genomes[self._handed : self._handed + k]]
        self._handed += k
        return out

    def pending(self) -> list[Genome]:
        return [self._genomes[i].copy() for i in range(self._handed) if i not in self._results]

    def tell(self, genomes: Sequence[Genome], values: Sequence[Sequence[float] | None]) -> None:
        self._check_tell_lengths(genomes, values)
        for genome, value in zip(genomes, values, strict=True):
            key = genome_key(self._as_genome(genome))
            index = next(
                (i for i in range(self._handed) if self._keys[i] == key and i not in self._results),
                None,
            )
            if index is None:
                raise StrategyError(
                    f"{self.name}: told a genome that is not pending in the current generation "
                    f"(pending: {self._handed - len(self._results)}); CMA-ES only learns from genomes it asked"
                )
            clean = self._clean_values(value)
            if clean is None:
                self._results[index] = None
            else:
                self._results[index] = float(self._minimising(clean)[0])
                self._remember(self._genomes[index], clean)
            self._n_told += 1
        if self._raw and len(self._results) == len(self._raw):
            self._finish_generation()

    def _finish_generation(self) -> None:
        finite = [v for v in self._results.values() if v is not None]
        worst = max([*finite, *([] if self._worst is None else [self._worst])], default=None)
        penalty = FAILURE_PENALTY_BEFORE_ANY_VALUE if worst is None else worst + 1.0 + abs(worst)
        fitness = [penalty if self._results[i] is None else self._results[i] for i in range(len(self._raw))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._es.tell(self._raw, fitness)
        self._worst = worst
        self._clear_generation()
        if self._restarts_done < self.restarts and self._es.stop():
            self._restarts_done += 1
            self._popsize = round(self._popsize * self.incpopsize)
            self._es = self._new_es(self._randn.rng.uniform(0.0, 1.0, self.problem.dim))

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        in_flight = bool(self._raw)
        return {
            **self._state_header(),
            "version": _STATE_VERSION,
            "cma_version": cma.__version__,
            "es": self._es_before_ask if in_flight else self._es.pickle_dumps(),
            "in_flight": in_flight,
            "generation": [g.copy() for g in self._genomes],
            "handed": self._handed,
            "results": dict(self._results),
            "popsize": self._popsize,
            "restarts_done": self._restarts_done,
            "worst": self._worst,
            "n_told": self._n_told,
            "front": self._front_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        es = pickle.loads(state["es"])
        self._es = es
        self._randn = es.opts["randn"]
        self._popsize = int(state["popsize"])
        self._restarts_done = int(state["restarts_done"])
        self._worst = state["worst"]
        self._n_told = int(state["n_told"])
        self._load_front(state["front"])
        self._clear_generation()
        if state["in_flight"]:
            self._sample_generation()
            saved = state["generation"]
            if len(saved) != len(self._genomes) or any(
                not np.array_equal(a, b) for a, b in zip(saved, self._genomes, strict=False)
            ):
                raise StrategyError(
                    f"{self.name}: re-sampling the saved generation did not reproduce it "
                    f"(saved with cma {state.get('cma_version')}, running {cma.__version__})"
                )
            self._handed = int(state["handed"])
            self._results = dict(state["results"])


class SepCMAStrategy(CMAStrategy):
    """Separable (diagonal-covariance) CMA-ES, cma's ``CMA_diagonal=True``: O(d) memory, for 10^4+ dims."""

    name: ClassVar[str] = "sep-cma"
    diagonal: ClassVar[bool] = True
