"""What a runner is given and what it gives back.

A Runner never decides what to try next (that is the Strategy's job) and never
writes the trial record (the Study's): it turns candidates into scores, and an
exception inside one candidate becomes a failed result, never a dead search.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evomerge.recipe.model import Recipe

if TYPE_CHECKING:
    from evomerge.racing.request import RaceRequest


@dataclass
class Candidate:
    """One recipe to evaluate; ``key`` identifies it in the trial record (a hash of its genome)."""

    key: str
    recipe: Recipe
    genome: np.ndarray | None = None
    split: str = "train"
    race: RaceRequest | None = None  # score in stages and stop early (evomerge.racing); None: one full pass


@dataclass
class EvalResult:
    key: str
    status: Literal["ok", "failed", "pruned"]  # pruned: stopped by racing after part of the examples
    objectives: dict[str, float] = field(default_factory=dict)
    # per task, one score per example; workers send arrays (a Ray result pickles as one buffer, not a
    # list of Python floats); the trial record stores them as JSON lists
    per_example: dict[str, np.ndarray | list[float]] = field(default_factory=dict)
    error: str | None = None  # the traceback(s) when failed
    merge_seconds: float = 0.0
    fitness_seconds: float = 0.0
    worker: str = "local"
    details: dict[str, Any] = field(default_factory=dict)
    # staged scoring (evomerge.racing.staged): examples_scored, stage, intermediate, and for pruned: reason,
    # scored_indices (per task, the examples ``per_example`` holds the scores of)
    racing: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Runner(ABC):
    """Evaluates candidates; results are yielded as they complete (possibly out of order).

    Two ways to drive it. ``evaluate(batch)`` yields the batch's results as they
    complete (a generational loop). The streaming pair ``submit``/``poll`` keeps
    up to ``capacity`` candidates in flight and hands back results as they come,
    so a loop can ask the strategy for more the moment a slot frees. Every
    runner has both: the streaming defaults below run on top of ``evaluate``,
    one candidate per ``poll``; runners with real parallelism (Ray) override them.
    Each submitted candidate comes back from ``poll`` exactly once.
    """

    @abstractmethod
    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]: ...

    # ---- streaming (defaults on top of evaluate; subclasses need not call __init__) ----------------
    @property
    def capacity(self) -> int:
        """How many submitted, unfinished candidates keep this runner fully busy."""
        return 1

    @property
    def pending(self) -> int:
        """Candidates submitted whose results ``poll`` has not returned yet."""
        return len(getattr(self, "_submitted", ()))

    def submit(self, candidates: Sequence[Candidate]) -> None:
        """Queue candidates for evaluation; their results come back from ``poll``."""
        if not hasattr(self, "_submitted"):
            self._submitted: deque[Candidate] = deque()
        self._submitted.extend(candidates)

    def poll(self, timeout: float | None = None) -> list[EvalResult]:
        """Results finished since the last call; waits up to ``timeout`` s (None: no limit) for the first one.

        Returns ``[]`` when nothing is pending or the timeout passed first. The
        default evaluates the oldest submitted candidate now, in-process.
        """
        queue = getattr(self, "_submitted", None)
        if not queue:
            return []
        return list(self.evaluate([queue.popleft()]))

    def cancel(self) -> None:
        """Forget every submitted candidate ``poll`` has not returned (the caller stopped early; a resume re-asks)."""
        queue = getattr(self, "_submitted", None)
        if queue:
            queue.clear()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers and devices."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
