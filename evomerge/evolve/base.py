"""The protocol of a model-space evolution: ask one child, tell its scores, snapshot the whole state.

Resume contract (the same as ``evomerge.strategies.base``): ``state_dict()`` is picklable and holds
everything, RNG included; a fresh instance built with the same options and ``load_state_dict(state)``
asks the very same children afterwards, so the driver can replay journaled scores instead of
re-evaluating. Children are numbered from 0 in ask order; ``tell`` must come before the next ``ask``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import EvomergeError


class EvolutionError(EvomergeError):
    """An evolution was driven against its contract (tell without ask, scores of the wrong length...)."""


@dataclass
class Child:
    """A candidate model: ``genome`` is a float32 flat vector (a whole model, or a task vector)."""

    index: int
    genome: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # how it was made: parents, split point, weights


class ModelEvolution(ABC):
    """One child at a time: ``ask`` → evaluate → ``tell``; ``scores`` are higher-is-better.

    ``n_scores`` is the length of the score vector ``tell`` expects (per-example scores for M2N2,
    one score per task for CycleQD); ``None`` told for a failed evaluation drops the child.
    """

    name: ClassVar[str]

    def __init__(self, n_scores: int) -> None:
        self.n_scores = int(n_scores)
        self.n_told = 0  # children told so far (failed ones included): the next child's index
        self._asked: Child | None = None

    @abstractmethod
    def _make_child(self, index: int) -> Child:
        """Build the next child (drawing from the strategy's own RNG only)."""

    @abstractmethod
    def _accept(self, child: Child, scores: np.ndarray) -> None:
        """Learn from an evaluated child (e.g. insert it into the archive, or drop it)."""

    @abstractmethod
    def best_genome(self) -> np.ndarray:
        """The strategy's current answer: the genome it would export."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Algorithm-specific state (arrays, RNG state)."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``_state``."""

    def ask(self) -> Child:
        if self._asked is not None:
            raise EvolutionError(f"{self.name}: child {self._asked.index} was asked and not told yet")
        self._asked = self._make_child(self.n_told)
        return self._asked

    def tell(self, child: Child, scores: np.ndarray | None) -> None:
        if self._asked is None or child.index != self._asked.index:
            raise EvolutionError(f"{self.name}: told child {child.index}, but the asked child is "
                                 f"{None if self._asked is None else self._asked.index}")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.size != self.n_scores:
                raise EvolutionError(f"{self.name}: {scores.size} scores told, expected {self.n_scores}")
            if not np.all(np.isfinite(scores)):
                scores = None
        if scores is not None:
            self._accept(child, scores)
        self._asked = None
        self.n_told += 1

    def state_dict(self) -> dict[str, Any]:
        """Snapshot between a tell and the next ask (an asked child is not part of the state)."""
        if self._asked is not None:
            raise EvolutionError(f"{self.name}: snapshot taken while child {self._asked.index} is asked")
        return {"name": self.name, "n_scores": self.n_scores, "n_told": self.n_told, "algorithm": self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name or state.get("n_scores") != self.n_scores:
            raise EvolutionError(f"{self.name}: cannot load a state of {state.get('name')!r} with "
                                 f"{state.get('n_scores')} scores into one with {self.n_scores}")
        self._load_state(state["algorithm"])
        self.n_told = int(state["n_told"])
        self._asked = None


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
