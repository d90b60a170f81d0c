"""The in-process runner: one EvalWorker, candidates in order. For tests, debugging and one-device runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.exec.worker import EvalWorker


class LocalRunner(Runner):
    def __init__(self, worker: EvalWorker) -> None:
        self.worker = worker

    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]:
        for candidate in candidates:
            yield self.worker.evaluate(candidate)
