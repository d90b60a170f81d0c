"""The streaming loop: every slot kept busy, results told as they arrive, and a crash anywhere resumes exactly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.study import stream
from evomerge.study.config import RunConfig
from evomerge.study.record import TrialStore
from evomerge.study.study import Study


class ShuffledRunner(Runner):
    """``capacity`` candidates in flight; ``poll`` returns the pending one with the smallest key, so results come
    back out of ask order, deterministically given what is pending. Genomes with x0 > 0.8 fail."""

    def __init__(self, capacity: int = 3) -> None:
        self._capacity = capacity
        self.queue: list[Candidate] = []
        self.max_pending = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def pending(self) -> int:
        return len(self.queue)

    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]:
        for c in candidates:
            yield self._score(c)

    def submit(self, candidates: Sequence[Candidate]) -> None:
        self.queue.extend(candidates)
        self.max_pending = max(self.max_pending, len(self.queue))

    def poll(self, timeout: float | None = None) -> list[EvalResult]:
        if not self.queue:
            return []
        first = min(self.queue, key=lambda c: c.key)
        self.queue.remove(first)
        return [self._score(first)]

    def cancel(self) -> None:
        self.queue.clear()

    @staticmethod
    def _score(c: Candidate) -> EvalResult:
        g = np.asarray(c.genome)
        if g[0] > 0.8:
            return EvalResult(key=c.key, status="failed", error="x0 too large for this candidate")
        return EvalResult(key=c.key, status="ok", objectives={"sphere": float(np.sum((g - 0.3) ** 2))})


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the loop handles it."""


def config(tmp_path, name: str, strategy: str, evaluations: int = 30) -> RunConfig:
    return RunConfig.from_dict({
        "name": name, "space": {"kind": "box", "dim": 3},
        "strategy": {"name": strategy, "options": {}, "batch_size": 2},
        "objectives": [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": evaluations}, "seed": 3, "output": str(tmp_path / name),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"},
    })


def trials(study: Study) -> list[tuple[str, str, dict, int]]:
    return [(r.key, r.status, r.objectives, r.user_attrs["asked"]) for r in study.store.records()]


@pytest.mark.parametrize("strategy", ["tpe", "nsga2", "random"])
def test_the_pool_stays_full_and_results_are_told_out_of_ask_order(tmp_path, strategy):
    runner = ShuffledRunner(capacity=3)
    study = Study.create(config(tmp_path, "full", strategy), runner=runner)
    summary = study.run()
    assert summary.n_trials == 30 and runner.max_pending == 3
    records = study.store.records()
    asked = [r.user_attrs["asked"] for r in records]
    assert asked[0] == 3 and all(a <= 30 for a in asked), "the first result arrives with three candidates out"
    assert asked == sorted(asked)
    assert len({r.key for r in records}) == 30
    assert any(r.status == "failed" for r in records), "the problem should produce failures"
    assert not study.strategy.pending(), "every asked genome was told"


@pytest.mark.parametrize("strategy", ["tpe", "nsga2", "random"])
@pytest.mark.parametrize("crash_at", [(4, "record"), (11, "tell"), (23, "record")])
def test_a_crash_anywhere_resumes_into_the_uninterrupted_trials(tmp_path, monkeypatch, strategy, crash_at):
    reference = Study.create(config(tmp_path, "ref", strategy), runner=ShuffledRunner())
    reference.run()
    expected = trials(reference)

    # checkpoints only at the first tell: the resume must replay many trials from storage alone
    monkeypatch.setattr(stream, "CHECKPOINT_COST_SHARE", 0.0)
    n, where = crash_at
    calls = {"n": 0}
    if where == "record":
        original_add = TrialStore.add

        def add(self, *a, **k):
            number = original_add(self, *a, **k)
            calls["n"] += 1
            if calls["n"] == n:
                raise Crash
            return number

        monkeypatch.setattr(TrialStore, "add", add)
    killed = Study.create(config(tmp_path, "killed", strategy), runner=ShuffledRunner())
    if where == "tell":
        original_tell = killed.strategy.tell

        def tell(genomes, values):
            calls["n"] += 1
            if calls["n"] == n:
                raise Crash
            original_tell(genomes, values)

        killed.strategy.tell = tell  # type: ignore[method-assign]
    with pytest.raises(Crash):
        killed.run()
    monkeypatch.undo()
    before = len(killed.store.records())
    assert 0 < before < 30

    resumed = Study.open(tmp_path / "killed", runner=ShuffledRunner())
    summary = resumed.run()
    assert summary.n_trials == 30
    assert trials(resumed) == expected


def test_a_stop_request_leaves_in_flight_candidates_for_the_resume(tmp_path, monkeypatch):
    from evomerge import interrupt

    reference = Study.create(config(tmp_path, "ref", "tpe"), runner=ShuffledRunner())
    reference.run()

    study = Study.create(config(tmp_path, "stop", "tpe"), runner=ShuffledRunner())
    original_add = TrialStore.add
    calls = {"n": 0}

    def add(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            monkeypatch.setattr(interrupt, "requested", lambda: True)
        return original_add(self, *a, **k)

    monkeypatch.setattr(TrialStore, "add", add)
    summary = study.run()
    assert summary.stopped_early and summary.n_trials == 9
    monkeypatch.undo()
    resumed = Study.open(tmp_path / "stop", runner=ShuffledRunner())
    assert resumed.run().n_trials == 30
    assert trials(resumed) == trials(reference)


def test_a_storage_that_does_not_match_the_checkpoint_is_refused(tmp_path):
    study = Study.create(config(tmp_path, "odd", "random", evaluations=6), runner=ShuffledRunner())
    study.run()
    ckpt = tmp_path / "odd" / "strategy.pkl"
    ckpt.unlink()  # the checkpoint is gone but the (out-of-order) trials are there: replay from scratch works
    again = Study.open(tmp_path / "odd", runner=ShuffledRunner())
    assert again.run().n_trials == 6
    # a foreign trial in the storage (not a genome this strategy asks) cannot be replayed: clear error
    ckpt.unlink()
    foreign = Study.open(tmp_path / "odd", runner=ShuffledRunner())
    foreign.store.add(EvalResult(key="f" * 20, status="ok", objectives={"sphere": 1.0}), np.zeros(3), None,
                      {"asked": 1})
    with pytest.raises(Exception, match="was not asked by this run's strategy"):
        foreign.run()


def test_trials_without_ask_counts_are_refused_with_the_reason(tmp_path):
    study = Study.create(config(tmp_path, "old", "random", evaluations=4), runner=ShuffledRunner())
    study.store.add(EvalResult(key="e" * 20, status="ok", objectives={"sphere": 1.0}), np.zeros(3), None, {})
    with pytest.raises(Exception, match="has no ask count: it was recorded by the generational loop"):
        study.run()
