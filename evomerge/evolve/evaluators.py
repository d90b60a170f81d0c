"""Who scores an evolution's children: this process, one at a time, or a runner's workers (Ray), many at once.

The driver submits children and polls for whatever has finished; results may come back in any
order. ``ChildScorer`` is what a Ray worker holds: the problem (one resident model and the fitness
tasks), built once per worker process and rebuilt by a restarted one.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from evomerge.evolve.base import Child
from evomerge.exec.base import Candidate, Runner


@dataclass(frozen=True)
class Scored:
    index: int
    scores: np.ndarray | None  # None: failed (``error`` says why)
    error: str | None = None


class ChildEvaluator(Protocol):
    @property
    def capacity(self) -> int: ...  # children in flight that keep every worker busy

    def submit(self, child: Child) -> None: ...

    def poll(self, timeout: float | None) -> list[Scored]: ...  # finished since the last call

    def cancel(self) -> None: ...  # forget submitted children (the driver stopped early)


class InProcess:
    """Scores with a function in this process, in submission order, one per ``poll``."""

    def __init__(self, evaluate: Callable[[Child], np.ndarray | None]) -> None:
        self.evaluate = evaluate
        self._queue: deque[Child] = deque()

    @property
    def capacity(self) -> int:
        return 1

    def submit(self, child: Child) -> None:
        self._queue.append(child)

    def poll(self, timeout: float | None = None) -> list[Scored]:
        if not self._queue:
            return []
        child = self._queue.popleft()
        try:
            scores = self.evaluate(child)
        except Exception:
            return [Scored(child.index, None, traceback.format_exc())]
        return [Scored(child.index, None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1))]

    def cancel(self) -> None:
        self._queue.clear()


class OnRunner:
    """Scores on a runner's workers (``RayRunner(target=ChildScorer(...))``): as many at once as it has slots."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @property
    def capacity(self) -> int:
        return self.runner.capacity

    def submit(self, child: Child) -> None:
        self.runner.submit([Candidate(key=f"child:{child.index}", recipe=None,  # type: ignore[arg-type]
                                      genome=child.genome)])

    def poll(self, timeout: float | None = None) -> list[Scored]:
        out = []
        for result in self.runner.poll(timeout):
            index = int(result.key.partition(":")[2])
            if result.ok:
                out.append(Scored(index, np.asarray(result.per_example["scores"], dtype=np.float64)))
            else:
                out.append(Scored(index, None, f"on {result.worker}: {result.error}"))
        return out

    def cancel(self) -> None:
        self.runner.cancel()

    def worker_states(self) -> list:
        states = getattr(self.runner, "worker_states", None)
        return states() if callable(states) else []


class ChildScorer:
    """A picklable scorer for Ray actors: the problem is built on first use, in the worker's process.

    ``kind``: which score vector the algorithm competes on (M2N2: per example; CycleQD: per task).
    ``offset``: a checkpoint whose weights are added to each genome first (CycleQD's task vectors).
    """

    def __init__(self, reference: str | Path, tasks: Sequence[str | Path], *, kind: Literal["per_example", "per_task"],
                 offset: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> None:
        self.reference, self.tasks, self.kind = str(reference), [str(t) for t in tasks], kind
        self.offset, self.device, self.threads = offset, device, threads
        self._problem: Any = None
        self._offset: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_problem": None, "_offset": None}  # each worker builds its own

    def __call__(self, genome: np.ndarray, recipe: object = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        if self._problem is None:
            import torch

            from evomerge.evolve.problem import ModelTasksProblem

            if self.threads is not None:
                torch.set_num_threads(self.threads)
            self._problem = ModelTasksProblem(self.reference, self.tasks, device=self.device)
            if self.offset is not None:
                self._offset = self._problem.genome_of(self.offset)
        weights = genome if self._offset is None else self._offset + genome
        result = self._problem.score(np.asarray(weights, dtype=np.float32))
        scores = result.per_example if self.kind == "per_example" else result.per_task
        return {"mean_score": float(np.mean(scores))}, {"scores": np.asarray(scores, dtype=np.float64)}
