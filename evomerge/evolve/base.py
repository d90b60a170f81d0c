"""The protocol of a model-space evolution: ask one child, tell its scores, snapshot the whole state.

Resume contract (the same as ``evomerge.strategies.base``): ``state_dict()`` is picklable and holds
everything, RNG included; a fresh instance built with the same options and ``load_state_dict(state)``
asks the very same children afterwards, so the driver can replay journaled scores instead of
re-evaluating. Children are numbered from 0 in ask order. Several may be asked before they are told
(an asynchronous driver keeps every worker busy), told in any order; ``can_ask`` says when the
algorithm needs results before it can make the next child (e.g. until its initial genomes are scored).
Children asked and not told are part of the snapshot.
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
        self.n_told = 0  # children told so far (failed ones included)
        self.n_asked = 0  # children asked so far: the next child's index
        self._asked: dict[int, Child] = {}  # asked, not told yet

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

    def can_ask(self) -> bool:
        """Whether the next child can be made before more results arrive (override where it cannot)."""
        return True

    @property
    def pending(self) -> list[Child]:
        """Children asked and not told, in ask order."""
        return [self._asked[i] for i in sorted(self._asked)]

    def pending_child(self, index: int) -> Child | None:
        """Child ``index`` if it was asked and not told yet."""
        return self._asked.get(index)

    def ask(self) -> Child:
        if not self.can_ask():
            raise EvolutionError(f"{self.name}: child {self.n_asked} needs the results of children "
                                 f"{sorted(self._asked)} first")
        child = self._make_child(self.n_asked)
        self._asked[child.index] = child
        self.n_asked += 1
        return child

    def tell(self, child: Child, scores: np.ndarray | None) -> None:
        if child.index not in self._asked:
            raise EvolutionError(f"{self.name}: told child {child.index}, but the asked children are "
                                 f"{sorted(self._asked)}")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.size != self.n_scores:
                raise EvolutionError(f"{self.name}: {scores.size} scores told, expected {self.n_scores}")
            if not np.all(np.isfinite(scores)):
                scores = None
        del self._asked[child.index]
        if scores is not None:
            self._accept(child, scores)
        self.n_told += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything, the children asked and not yet told included."""
        return {"name": self.name, "n_scores": self.n_scores, "n_told": self.n_told, "n_asked": self.n_asked,
                "pending": [(c.index, c.genome.copy(), dict(c.info)) for c in self.pending],
                "algorithm": self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name or state.get("n_scores") != self.n_scores:
            raise EvolutionError(f"{self.name}: cannot load a state of {state.get('name')!r} with "
                                 f"{state.get('n_scores')} scores into one with {self.n_scores}")
        self._load_state(state["algorithm"])
        self.n_told = int(state["n_told"])
        self.n_asked = int(state.get("n_asked", self.n_told))
        self._asked = {i: Child(i, np.array(g), info) for i, g, info in state.get("pending", [])}


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
