"""Optuna samplers as strategies: NSGA-II, NSGA-III, TPE and GP, driven through ask/tell.

Each strategy owns a private in-memory Optuna study (its own state — the project's persistent
trial record is a different storage, owned by the Study). Genome dimension ``i`` is the Optuna
parameter ``problem.param_names[i]`` with ``FloatDistribution(lower[i], upper[i])``.

* NSGA-II (Deb et al. 2002, doi:10.1109/4235.996017), as compared against in CycleQD, arXiv 2410.14735;
* NSGA-III (Deb & Jain 2014, doi:10.1109/TEVC.2013.2281535), used by MAP, arXiv 2406.07529;
* TPE (Bergstra et al. 2011; multivariate, Falkner et al. 2018, arXiv 1807.01774; multi-objective
  MOTPE, Ozaki et al. 2022, arXiv 2204.07446);
* GP (Optuna's ``GPSampler``: logEI, and logEHVI for several objectives, arXiv 2310.20708).

Failures (``None``, NaN, inf) are told as ``TrialState.FAIL``: Optuna's samplers ignore failed trials.

Resume: ``state_dict`` holds the sampler's random states and warm starts as plain data (the sampler
itself is rebuilt from its settings, see ``sampler_state``), the study's system attrs
(NSGA's parent-population cache) and every trial as plain data — params, values, state and system
attrs (NSGA's generation number lives there) — including asked-but-untold trials, which are kept
``RUNNING`` (TPE's constant liar and GP's batch acquisition see them, as in the uninterrupted run).
``load_state_dict`` builds a fresh in-memory study and replays the trials in number order, so trial
numbers and ids match and the next asks are bit-identical; the restored pending genomes can be told
whenever their results arrive.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, GPSampler, NSGAIIISampler, NSGAIISampler, TPESampler
from optuna.samplers.nsgaii import (
    BaseCrossover,
    BLXAlphaCrossover,
    PolynomialMutation,
    SBXCrossover,
    SPXCrossover,
    UNDXCrossover,
    UniformCrossover,
    VSBXCrossover,
)
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from evomerge.errors import ConfigError
from evomerge.strategies.base import Genome, Problem, Strategy, StrategyError, genome_key
from evomerge.strategies.sampler_state import load_sampler_state, sampler_state

_STATE_VERSION = 2  # 2: the sampler as plain data (1 pickled the live sampler)
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("evomerge_quiet_optuna", default=False)


class _QuietFilter(logging.Filter):
    """Drops Optuna's per-trial log lines emitted by our private studies (and only those)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_FILTER = _QuietFilter()
_FILTERED: set[str] = set()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's loggers and experimental-feature warnings while our private study works."""
    if len(_FILTERED) < len(logging.root.manager.loggerDict):
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("optuna") and name not in _FILTERED:
                logging.getLogger(name).addFilter(_FILTER)
        _FILTERED.update(logging.root.manager.loggerDict)
    token = _QUIET.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message=".*independent.*")
            yield
    finally:
        _QUIET.reset(token)


class OptunaStrategy(Strategy):
    """Base of the Optuna-sampler strategies: a private in-memory study driven by ask/tell."""

    supports_async: ClassVar[bool] = True
    multi_objective: ClassVar[bool] = True

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1) -> None:
        super().__init__(problem, seed=seed)
        if batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._names = problem.param_names
        self._distributions = {
            n: FloatDistribution(float(lo), float(hi))
            for n, lo, hi in zip(self._names, problem.lower, problem.upper, strict=True)
        }
        with _quiet():
            self._sampler = self._make_sampler()
        self._study = self._new_study(self._sampler)
        self._pending: dict[int, tuple[bytes, np.ndarray]] = {}  # trial number -> (key, genome), ask order

    def _make_sampler(self) -> BaseSampler:
        raise NotImplementedError

    def _new_study(self, sampler: BaseSampler) -> optuna.Study:
        with _quiet():
            return optuna.create_study(
                storage=InMemoryStorage(), sampler=sampler, directions=list(self.problem.directions)
            )

    @property
    def study(self) -> optuna.Study:
        """The private study (read-only use: inspection, Optuna's plots)."""
        return self._study

    def ask(self, n: int | None = None) -> list[Genome]:
        n = self._check_ask_n(n, self.batch_size)
        out = []
        for _ in range(n):
            with _quiet():
                trial = self._study.ask(self._distributions)
            genome = np.array([trial.params[name] for name in self._names], dtype=np.float64)
            self._pending[trial.number] = (genome_key(genome), genome)
            out.append(genome.copy())
        return out

    def pending(self) -> list[Genome]:
        return [g.copy() for _, g in self._pending.values()]

    def tell(self, genomes: Sequence[Genome], values: Sequence[Sequence[float] | None]) -> None:
        self._check_tell_lengths(genomes, values)
        for genome, value in zip(genomes, values, strict=True):
            key = genome_key(self._as_genome(genome))
            number = next((num for num, (k, _) in self._pending.items() if k == key), None)
            if number is None:
                raise StrategyError(
                    f"{self.name}: told a genome that is not pending ({len(self._pending)} pending); "
                    "tell only genomes this strategy asked, once each"
                )
            clean = self._clean_values(value)
            with _quiet():
                if clean is None:
                    self._study.tell(number, state=TrialState.FAIL)
                else:
                    self._study.tell(number, list(clean))
            _, g = self._pending.pop(number)
            if clean is not None:
                self._remember(g, clean)

    def tell_pruned(self, genomes: Sequence[Genome], estimate: Sequence[float] | None,
                    intermediate: Sequence[tuple[int, float]]) -> None:
        """A candidate racing stopped: an Optuna PRUNED trial, with its intermediate values (single objective;
        Optuna's samplers rank such trials below the complete ones, TPE by their last intermediate value)."""
        storage = self._study._storage
        for genome in genomes:
            key = genome_key(self._as_genome(genome))
            number = next((num for num, (k, _) in self._pending.items() if k == key), None)
            if number is None:
                raise StrategyError(f"{self.name}: told a genome that is not pending ({len(self._pending)} pending)")
            if self.problem.n_objectives == 1:
                trial_id = storage.get_trial_id_from_study_id_trial_number(self._study._study_id, number)
                for step, value in intermediate:
                    storage.set_trial_intermediate_value(trial_id, int(step), float(value))
            with _quiet():
                self._study.tell(number, state=TrialState.PRUNED)
            self._pending.pop(number)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "values": None if t.values is None else list(t.values),
                "intermediate_values": dict(t.intermediate_values),
                "system_attrs": dict(t.system_attrs),
                "user_attrs": dict(t.user_attrs),
                "datetime_start": t.datetime_start,
                "datetime_complete": t.datetime_complete,
            }
            for t in self._study.get_trials(deepcopy=True)
        ]
        return {
            **self._state_header(),
            "version": _STATE_VERSION,
            "optuna_version": optuna.__version__,
            "sampler": sampler_state(self._sampler),
            "study_system_attrs": dict(self._study._storage.get_study_system_attrs(self._study._study_id)),
            "trials": trials,
            "pending": [(num, g.copy()) for num, (_, g) in self._pending.items()],
            "front": self._front_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        if state.get("version") != _STATE_VERSION:
            raise StrategyError(
                f"{self.name}: the checkpoint's sampler state has format {state.get('version')} "
                f"(this evomerge reads {_STATE_VERSION}); resume with the evomerge version that wrote it"
            )
        with _quiet():
            sampler = self._make_sampler()
        load_sampler_state(sampler, state["sampler"], owner=self.name)
        study = self._new_study(sampler)
        storage = study._storage
        for key, value in state["study_system_attrs"].items():
            storage.set_study_system_attr(study._study_id, key, value)
        for i, t in enumerate(state["trials"]):
            if t["number"] != i:
                raise StrategyError(f"{self.name}: saved trials are not numbered 0..n-1 (found {t['number']} at {i})")
            frozen = create_trial(
                state=TrialState[t["state"]],
                params=t["params"],
                distributions={name: self._distributions[name] for name in t["params"]},
                values=t["values"],
                intermediate_values=t.get("intermediate_values") or None,
                system_attrs=t["system_attrs"],
                user_attrs=t["user_attrs"],
            )
            frozen.datetime_start = t["datetime_start"]
            frozen.datetime_complete = t["datetime_complete"]
            with _quiet():
                study.add_trial(frozen)
        self._sampler = sampler
        self._study = study
        self._pending = {int(num): (genome_key(g), np.array(g, dtype=np.float64)) for num, g in state["pending"]}
        self._load_front(state["front"])


CROSSOVERS: dict[str, type[BaseCrossover]] = {
    "sbx": SBXCrossover,
    "uniform": UniformCrossover,
    "blxalpha": BLXAlphaCrossover,
    "spx": SPXCrossover,
    "undx": UNDXCrossover,
    "vsbx": VSBXCrossover,
}
MUTATIONS = ("polynomial", "resample")


class NSGAIIStrategy(OptunaStrategy):
    """NSGA-II via ``optuna.samplers.NSGAIISampler``; the natural batch is one population.

    Defaults follow Deb et al. 2002: SBX crossover and polynomial mutation (probability 1/d per
    gene). ``crossover="uniform", mutation="resample"`` gives Optuna's own defaults instead.
    """

    name: ClassVar[str] = "nsga2"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        population_size: int = 50,
        crossover: str = "sbx",
        mutation: str = "polynomial",
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
    ) -> None:
        if population_size < 2:
            raise ConfigError(f"{self.name}: population_size must be >= 2, got {population_size}")
        if crossover not in CROSSOVERS or mutation not in MUTATIONS:
            raise ConfigError(
                f"{self.name}: crossover must be one of {sorted(CROSSOVERS)} (got {crossover!r}) and "
                f"mutation one of {list(MUTATIONS)} (got {mutation!r})"
            )
        self._crossover, self._mutation = crossover, mutation
        self._kwargs = {
            "population_size": int(population_size),
            "mutation_prob": mutation_prob,
            "crossover_prob": crossover_prob,
            "swapping_prob": swapping_prob,
        }
        super().__init__(problem, seed=seed, batch_size=int(population_size))

    def _operators(self) -> dict[str, Any]:
        return {
            "crossover": CROSSOVERS[self._crossover](),
            "mutation": PolynomialMutation() if self._mutation == "polynomial" else None,
        }

    def _make_sampler(self) -> BaseSampler:
        return NSGAIISampler(seed=self.seed, **self._operators(), **self._kwargs)


class NSGAIIIStrategy(NSGAIIStrategy):
    """NSGA-III via ``optuna.samplers.NSGAIIISampler`` (reference points: Das-Dennis, ``dividing_parameter``)."""

    name: ClassVar[str] = "nsga3"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        population_size: int = 50,
        crossover: str = "sbx",
        mutation: str = "polynomial",
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        dividing_parameter: int = 3,
    ) -> None:
        self._dividing_parameter = int(dividing_parameter)
        super().__init__(
            problem,
            seed=seed,
            population_size=population_size,
            crossover=crossover,
            mutation=mutation,
            mutation_prob=mutation_prob,
            crossover_prob=crossover_prob,
            swapping_prob=swapping_prob,
        )

    def _make_sampler(self) -> BaseSampler:
        return NSGAIIISampler(
            seed=self.seed, dividing_parameter=self._dividing_parameter, **self._operators(), **self._kwargs
        )


class TPEStrategy(OptunaStrategy):
    """Multivariate TPE (multi-objective capable) via ``optuna.samplers.TPESampler``."""

    name: ClassVar[str] = "tpe"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
        multivariate: bool = True,
        constant_liar: bool = True,
        batch_size: int = 1,
    ) -> None:
        self._kwargs = {
            "n_startup_trials": int(n_startup_trials),
            "n_ei_candidates": int(n_ei_candidates),
            "multivariate": bool(multivariate),
            "constant_liar": bool(constant_liar),
        }
        super().__init__(problem, seed=seed, batch_size=batch_size)

    def _make_sampler(self) -> BaseSampler:
        return TPESampler(seed=self.seed, **self._kwargs)


class GPStrategy(OptunaStrategy):
    """Gaussian-process Bayesian optimisation via ``optuna.samplers.GPSampler`` (needs torch and scipy)."""

    name: ClassVar[str] = "gp"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        n_startup_trials: int = 10,
        deterministic_objective: bool = False,
        batch_size: int = 1,
    ) -> None:
        self._kwargs = {
            "n_startup_trials": int(n_startup_trials),
            "deterministic_objective": bool(deterministic_objective),
        }
        super().__init__(problem, seed=seed, batch_size=batch_size)

    def _make_sampler(self) -> BaseSampler:
        return GPSampler(seed=self.seed, warn_independent_sampling=False, **self._kwargs)
