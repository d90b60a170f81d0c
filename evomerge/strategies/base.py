"""The Strategy protocol: propose genomes in a box, learn from their objective values.

A Strategy only proposes (Optuna's sampler/study/storage separation): it never touches storage
or models. The Study asks for genomes, decodes and evaluates them, tells the values back and
checkpoints ``state_dict()`` after each tell.

Resume contract (shared by every implementation):

* ``state_dict()`` is a picklable dict of plain data and bytes that holds everything needed to
  continue exactly, RNG states included. A fresh strategy built with the same ``Problem``, seed and
  options, then ``load_state_dict(state)``, is indistinguishable from the original: **the same
  sequence of later ask/tell calls yields bit-identical genomes**.
* Genomes asked before the snapshot and not yet told stay *pending* in the state (``pending()``
  lists them, in ask order); tell their values whenever they arrive.
* Genomes asked *after* the last snapshot are simply lost with the process: the restored strategy,
  asked again in the same order, hands out the very same genomes, so the Study can look their
  results up in its storage (by genome or by ask order) and tell them instead of re-evaluating.
  For model-based strategies (TPE, GP, NSGA) the order of tells between asks matters: replay the
  ask/tell interleaving as recorded in storage.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from evomerge.errors import ConfigError, EvomergeError

Genome = np.ndarray
"""A float64 vector inside the box ``[problem.lower, problem.upper]``."""

Direction = Literal["minimize", "maximize"]


class StrategyError(EvomergeError):
    """A strategy was driven against its contract (unknown genome told, wrong number of values...)."""


@dataclass(frozen=True)
class Problem:
    """What a strategy is told at construction: the box, the objectives, an optional start point.

    ``x0`` defaults to the box centre (the evolutionary-merge paper's x0 = 0.5 in [0, 1],
    arXiv 2403.13187); ``names`` default to ``x0..x{d-1}`` and name the Optuna parameters.
    """

    lower: np.ndarray
    upper: np.ndarray
    directions: tuple[Direction, ...] = ("minimize",)
    x0: np.ndarray | None = None
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        lower = np.array(self.lower, dtype=np.float64).reshape(-1)
        upper = np.array(self.upper, dtype=np.float64).reshape(-1)
        if lower.shape != upper.shape or lower.size == 0:
            raise ConfigError(f"Problem: lower {lower.shape} and upper {upper.shape} must be equal non-empty shapes")
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ConfigError("Problem: box bounds must be finite")
        if np.any(lower >= upper):
            i = int(np.argmax(lower >= upper))
            raise ConfigError(f"Problem: lower[{i}] = {lower[i]} must be < upper[{i}] = {upper[i]}; fix that dimension")
        directions = tuple(self.directions)
        if not directions or any(d not in ("minimize", "maximize") for d in directions):
            raise ConfigError(f"Problem: directions {directions!r} must be a non-empty tuple of 'minimize'/'maximize'")
        x0 = None
        if self.x0 is not None:
            x0 = np.array(self.x0, dtype=np.float64).reshape(-1)
            if x0.shape != lower.shape or np.any(x0 < lower) or np.any(x0 > upper):
                raise ConfigError(f"Problem: x0 must have shape {lower.shape} and lie inside the box")
        names = None
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != lower.size or len(set(names)) != len(names):
                raise ConfigError(f"Problem: names must be {lower.size} distinct strings, got {len(names)}")
        for arr in (lower, upper, x0):
            if arr is not None:
                arr.flags.writeable = False
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "directions", directions)
        object.__setattr__(self, "x0", x0)
        object.__setattr__(self, "names", names)

    @property
    def dim(self) -> int:
        return int(self.lower.size)

    @property
    def n_objectives(self) -> int:
        return len(self.directions)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.names if self.names is not None else tuple(f"x{i}" for i in range(self.dim))

    @property
    def start(self) -> np.ndarray:
        """``x0`` or the box centre."""
        return self.x0 if self.x0 is not None else (self.lower + self.upper) / 2.0

    @classmethod
    def box(
        cls, dim: int, lower: float = 0.0, upper: float = 1.0, directions: Sequence[Direction] = ("minimize",)
    ) -> Problem:
        """A ``dim``-dimensional cube ``[lower, upper]^dim`` (the paper's PS space is ``[0, 1]^d``)."""
        return cls(np.full(dim, float(lower)), np.full(dim, float(upper)), tuple(directions))


@dataclass(frozen=True)
class Evaluated:
    """A told genome with finite objective values (in the problem's own directions)."""

    genome: Genome
    values: tuple[float, ...]


def genome_key(genome: Sequence[float] | np.ndarray) -> bytes:
    """Exact identity of a genome: the bytes of its float64 representation."""
    return np.ascontiguousarray(genome, dtype=np.float64).tobytes()


class Strategy(ABC):
    """Ask/tell optimiser over a box. Subclasses set ``name``, ``supports_async``, ``multi_objective``.

    ``supports_async``: results may be told one at a time and out of order while more genomes are
    asked (TPE, GP, NSGA, random). A generation-locked strategy (CMA-ES) returns at most the rest
    of its current generation from ``ask`` and may return fewer than ``n`` (even none) until the
    generation has been told.
    """

    name: ClassVar[str]
    supports_async: ClassVar[bool]
    multi_objective: ClassVar[bool]

    def __init__(self, problem: Problem, *, seed: int) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"{type(self).__name__}: expected a Problem, got {type(problem).__name__}")
        if problem.n_objectives > 1 and not self.multi_objective:
            raise ConfigError(
                f"strategy {self.name!r} is single-objective but the problem has {problem.n_objectives} objectives; "
                "scalarise them in the Study or choose nsga2, nsga3, tpe, gp or random"
            )
        self.problem = problem
        self.seed = int(seed)
        self._front: list[Evaluated] = []

    # -- protocol ---------------------------------------------------------------------------
    @abstractmethod
    def ask(self, n: int | None = None) -> list[Genome]:
        """Return up to ``n`` new genomes (``None``: the natural batch)."""

    @abstractmethod
    def tell(self, genomes: Sequence[Genome], values: Sequence[Sequence[float] | None]) -> None:
        """Report objective values (``None`` or any non-finite value: the evaluation failed)."""

    def tell_pruned(self, genomes: Sequence[Genome], estimate: Sequence[float] | None,
                    intermediate: Sequence[tuple[int, float]]) -> None:
        """Report candidates that racing stopped early (``evomerge.racing``).

        ``estimate``: the running objective values over the examples scored (their means, an unbiased
        estimate of the full-split values); ``intermediate``: (examples scored, running scalar) per stage.
        Default: told ``estimate`` as the value (CMA-ES, the population methods, random); Optuna-based
        strategies override it to record an Optuna PRUNED trial.
        """
        self.tell(genomes, [estimate] * len(genomes))

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (picklable)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by ``state_dict`` of a strategy built with the same problem and options."""

    def pending(self) -> list[Genome]:
        """Genomes asked and not yet told, in ask order."""
        return []

    @property
    def finished(self) -> bool:
        """True once the strategy has nothing left to propose (MAP after re-evaluating its front): the Study stops."""
        return False

    def best(self) -> list[Evaluated]:
        """Best told genome (single objective) or the non-dominated told genomes (several objectives)."""
        return list(self._front)

    # -- helpers for subclasses -------------------------------------------------------------
    def _check_ask_n(self, n: int | None, natural: int) -> int:
        if n is None:
            return natural
        if int(n) != n or n < 0:
            raise StrategyError(f"{self.name}: ask(n) needs a non-negative integer, got {n!r}")
        return int(n)

    def _clean_values(self, values: Sequence[float] | float | None) -> tuple[float, ...] | None:
        """Validate one result; ``None`` for a failed evaluation (``None``, NaN or inf anywhere)."""
        if values is None:
            return None
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1)
        if arr.size != self.problem.n_objectives:
            raise StrategyError(
                f"{self.name}: got {arr.size} objective values for a problem with "
                f"{self.problem.n_objectives} objectives"
            )
        if not np.all(np.isfinite(arr)):
            return None
        return tuple(float(v) for v in arr)

    def _check_tell_lengths(self, genomes: Sequence[Genome], values: Sequence[Any]) -> None:
        if len(genomes) != len(values):
            raise StrategyError(f"{self.name}: tell got {len(genomes)} genomes but {len(values)} results")

    def _as_genome(self, genome: Sequence[float] | np.ndarray) -> np.ndarray:
        g = np.asarray(genome, dtype=np.float64).reshape(-1)
        if g.size != self.problem.dim:
            raise StrategyError(f"{self.name}: genome has {g.size} entries, the problem has {self.problem.dim}")
        return g

    def _minimising(self, values: Sequence[float]) -> np.ndarray:
        """Values turned into minimisation form (maximised objectives negated)."""
        signs = np.array([1.0 if d == "minimize" else -1.0 for d in self.problem.directions])
        return signs * np.asarray(values, dtype=np.float64)

    def _remember(self, genome: np.ndarray, values: tuple[float, ...]) -> None:
        """Keep the incumbent (one objective) or the non-dominated set (several), for ``best()``."""
        new = Evaluated(np.array(genome, dtype=np.float64), values)
        f = self._minimising(values)
        if self.problem.n_objectives == 1:
            if not self._front or f[0] < self._minimising(self._front[0].values)[0]:
                self._front = [new]
            return
        kept = []
        for e in self._front:
            g = self._minimising(e.values)
            if np.all(g <= f):  # an existing point dominates or equals the new one
                return
            if not (np.all(f <= g) and np.any(f < g)):
                kept.append(e)
        self._front = [*kept, new]

    def _front_state(self) -> list[tuple[np.ndarray, tuple[float, ...]]]:
        return [(e.genome.copy(), e.values) for e in self._front]

    def _load_front(self, front: list[tuple[np.ndarray, tuple[float, ...]]]) -> None:
        self._front = [Evaluated(np.array(g, dtype=np.float64), tuple(v)) for g, v in front]

    def _check_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("strategy") != self.name:
            got = state.get("strategy") if isinstance(state, dict) else type(state).__name__
            raise StrategyError(f"{self.name}: cannot load a state saved by strategy {got!r}")
        if state.get("dim") != self.problem.dim or tuple(state.get("directions", ())) != self.problem.directions:
            raise StrategyError(
                f"{self.name}: the saved state is for a problem with dim={state.get('dim')} and directions="
                f"{state.get('directions')}, this one has dim={self.problem.dim}, directions={self.problem.directions}"
            )

    def _state_header(self) -> dict[str, Any]:
        return {"strategy": self.name, "dim": self.problem.dim, "directions": self.problem.directions}


def in_box(problem: Problem, genome: np.ndarray) -> np.ndarray:
    """Clip to the box (guards against one-ulp excursions of affine maps)."""
    return np.minimum(np.maximum(genome, problem.lower), problem.upper)


def default_popsize(dim: int) -> int:
    """CMA-ES default λ = 4 + ⌊3 ln d⌋ (Hansen 2016, arXiv 1604.00772; used by arXiv 2403.13187)."""
    return 4 + math.floor(3 * math.log(dim))
