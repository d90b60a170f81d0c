"""Strategies that plan whole batches from what they have been told (MAP and its variants).

``ask`` hands out the current batch; once every genome of it has been told, ``_advance`` looks at the
told values and plans the next batch — or declares the search ``finished``. Planning is a pure
function of the told values and of random generators seeded by ``(seed, stage)``, so the state is
plain data (no live RNG) and a restored strategy plans bit-identical batches. Genomes already told
are never planned again: their recorded values are reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.strategies.base import Evaluated, Genome, Problem, Strategy, StrategyError, genome_key
from evomerge.strategies.preference import check_preference, select_by_preference

_STATE_VERSION = 1


class PlannedStrategy(Strategy):
    """Batch-planning base: subclasses implement ``_advance`` (and ``_extra_state``/``_load_extra``)."""

    supports_async: ClassVar[bool] = False
    multi_objective: ClassVar[bool] = True

    def __init__(self, problem: Problem, *, seed: int, preference: Sequence[float] | None = None) -> None:
        super().__init__(problem, seed=seed)
        self.preference = check_preference(preference, problem.n_objectives, f"{self.name}: preference")
        self._stage = 0
        self._finished = False
        self._planned: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._history: list[np.ndarray] = []  # every genome ever planned, in plan order
        self._told: dict[bytes, tuple[float, ...] | None] = {}

    # -- subclass hooks -----------------------------------------------------------------------
    def _advance(self) -> None:
        """Plan the next batch with ``_plan``, or move ``_stage`` on, or set ``_finished``; must make progress."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        return None

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished

    def _rng(self, *tag: int) -> np.random.Generator:
        """A generator that depends only on the seed, the stage and ``tag``: replanning after a restore is exact."""
        return np.random.default_rng([self.seed, self._stage, *tag])

    def _plan(self, genomes: Sequence[np.ndarray] | np.ndarray) -> int:
        """Queue genomes for asking, skipping those told or queued already; returns how many were queued."""
        queued = {genome_key(g) for g in [*self._planned, *self._pending]}
        added = 0
        for g in genomes:
            g = np.array(g, dtype=np.float64).reshape(-1)
            key = genome_key(g)
            if key in self._told or key in queued:
                continue
            queued.add(key)
            self._planned.append(g)
            self._history.append(g)
            added += 1
        return added

    def _value(self, genome: np.ndarray) -> tuple[float, ...] | None:
        return self._told.get(genome_key(genome))

    def _known(self, genomes: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Told genomes with finite values (of ``genomes``, default all planned ones) in plan order, and the values."""
        pool = self._history if genomes is None else genomes
        seen: set[bytes] = set()
        xs, ys = [], []
        for g in pool:
            key = genome_key(g)
            v = self._told.get(key)
            if v is None or key in seen:
                continue
            seen.add(key)
            xs.append(np.asarray(g, dtype=np.float64))
            ys.append(v)
        d, m = self.problem.dim, self.problem.n_objectives
        return np.array(xs, dtype=np.float64).reshape(-1, d), np.array(ys, dtype=np.float64).reshape(-1, m)

    # -- protocol ----------------------------------------------------------------------------
    def _settle(self) -> None:
        """Plan the next batch as soon as the current one is all told (so ``finished`` is true right after the
        last tell, and a checkpoint taken then holds the plan)."""
        while not self._planned and not self._pending and not self._finished:
            self._advance()

    def ask(self, n: int | None = None) -> list[Genome]:
        self._settle()
        k = self._check_ask_n(n, len(self._planned))
        out, self._planned = self._planned[:k], self._planned[k:]
        self._pending.extend(out)
        return [g.copy() for g in out]

    def pending(self) -> list[Genome]:
        return [g.copy() for g in self._pending]

    def tell(self, genomes: Sequence[Genome], values: Sequence[Sequence[float] | None]) -> None:
        self._check_tell_lengths(genomes, values)
        for genome, value in zip(genomes, values, strict=True):
            key = genome_key(self._as_genome(genome))
            index = next((i for i, g in enumerate(self._pending) if genome_key(g) == key), None)
            if index is None:
                raise StrategyError(f"{self.name}: told a genome that is not pending ({len(self._pending)} pending); "
                                    "tell only genomes this strategy asked, once each")
            clean = self._clean_values(value)
            g = self._pending.pop(index)
            self._told[key] = clean
            if clean is not None:
                self._remember(g, clean)
        self._settle()

    def preferred(self) -> Evaluated | None:
        """The told non-dominated genome the ``preference`` vector picks (None before any success)."""
        if not self._front:
            return None
        values = np.array([e.values for e in self._front])
        return self._front[select_by_preference(values, self.problem.directions, self.preference)]

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self._state_header(),
            "version": _STATE_VERSION,
            "seed": self.seed,
            "stage": self._stage,
            "finished": self._finished,
            "planned": [g.copy() for g in self._planned],
            "pending": [g.copy() for g in self._pending],
            "history": [g.copy() for g in self._history],
            "told": [(k, None if v is None else tuple(v)) for k, v in self._told.items()],
            "front": self._front_state(),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        if state.get("version") != _STATE_VERSION:
            raise StrategyError(f"{self.name}: state version {state.get('version')} is not {_STATE_VERSION}")
        self.seed = int(state["seed"])
        self._stage = int(state["stage"])
        self._finished = bool(state["finished"])
        self._planned = [np.array(g, dtype=np.float64) for g in state["planned"]]
        self._pending = [np.array(g, dtype=np.float64) for g in state["pending"]]
        self._history = [np.array(g, dtype=np.float64) for g in state["history"]]
        self._told = {bytes(k): None if v is None else tuple(float(x) for x in v) for k, v in state["told"]}
        self._load_front(state["front"])
        self._load_extra(state["extra"])
