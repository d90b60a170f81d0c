"""Uniform random search in the box: the honest baseline (Bergstra & Bengio 2012, JMLR 13)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.strategies.base import Genome, Problem, Strategy, genome_key

_STATE_VERSION = 1


class RandomStrategy(Strategy):
    """Draws i.i.d. uniform genomes from its own Generator; told values only feed ``best()``.

    Failed evaluations are ignored. Any genome of the right dimension may be told (asked or not);
    asked genomes stay in ``pending()`` until told.
    """

    name: ClassVar[str] = "random"
    supports_async: ClassVar[bool] = True
    multi_objective: ClassVar[bool] = True

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1) -> None:
        super().__init__(problem, seed=seed)
        if batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._rng = np.random.default_rng(self.seed)
        self._pending: list[np.ndarray] = []

    def pending(self) -> list[Genome]:
        return [g.copy() for g in self._pending]

    def ask(self, n: int | None = None) -> list[Genome]:
        n = self._check_ask_n(n, self.batch_size)
        lo, hi = self.problem.lower, self.problem.upper
        out = [np.minimum(lo + self._rng.random(self.problem.dim) * (hi - lo), hi) for _ in range(n)]
        self._pending += out
        return [g.copy() for g in out]

    def tell(self, genomes: Sequence[Genome], values: Sequence[Sequence[float] | None]) -> None:
        self._check_tell_lengths(genomes, values)
        for genome, value in zip(genomes, values, strict=True):
            g = self._as_genome(genome)
            key = genome_key(g)
            index = next((i for i, p in enumerate(self._pending) if genome_key(p) == key), None)
            if index is not None:
                del self._pending[index]
            clean = self._clean_values(value)
            if clean is not None:
                self._remember(g, clean)

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._state_header(),
            "version": _STATE_VERSION,
            "rng": self._rng.bit_generator.state,
            "pending": [g.copy() for g in self._pending],
            "front": self._front_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._pending = [np.array(g, dtype=np.float64) for g in state["pending"]]
        self._load_front(state["front"])
