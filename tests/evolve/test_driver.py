"""The evolve driver: a run interrupted at any child and resumed equals the uninterrupted run, and no
child is ever evaluated twice (journal replay), torn journal tails included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evomerge.evolve.base import Child, EvolutionError, ModelEvolution, restore_rng, rng_state
from evomerge.evolve.driver import JOURNAL, evolve
from evomerge.evolve.journal import Journal, read_journal


class HillClimber(ModelEvolution):
    """(1+1) random search: enough state (incumbent, RNG) to catch any resume divergence."""

    name = "hill"

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__(n_scores=2)
        self.rng = np.random.default_rng(seed)
        self.best = np.zeros(dim, dtype=np.float32)
        self.best_score = -np.inf

    def _make_child(self, index: int) -> Child:
        return Child(index, (self.best + self.rng.normal(0, 0.3, self.best.size)).astype(np.float32))

    def _accept(self, child: Child, scores: np.ndarray) -> None:
        if scores.sum() > self.best_score:
            self.best, self.best_score = child.genome, float(scores.sum())

    def best_genome(self) -> np.ndarray:
        return self.best

    def _state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng), "best": self.best.copy(), "best_score": self.best_score}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.rng = restore_rng(state["rng"])
        self.best, self.best_score = state["best"].copy(), state["best_score"]


class Crash(BaseException):
    """Stands in for kill -9: nothing after it runs (not even the final snapshot)."""


def scores_of(genome: np.ndarray) -> np.ndarray:
    return np.array([-np.sum((genome - 1.0) ** 2), -np.sum(np.abs(genome - 1.0))])


def make_evaluate(calls: list[int], crash_at: int | None = None, fail: frozenset[int] = frozenset()):
    def evaluate(child: Child) -> np.ndarray:
        if child.index == crash_at:
            raise Crash
        calls.append(child.index)
        if child.index in fail:
            raise RuntimeError("worker died")
        return scores_of(child.genome)

    return evaluate


def test_straight_run_reaches_budget(tmp_path: Path) -> None:
    algo = HillClimber(4, seed=1)
    calls: list[int] = []
    progress = evolve(algo, make_evaluate(calls), tmp_path, children=60)
    assert progress.children == 60 and calls == list(range(60))
    assert algo.best_score > scores_of(np.zeros(4)).sum()


@pytest.mark.parametrize("snapshot_every_s", [0.0, 1e9])  # snapshot each child / only the journal
@pytest.mark.parametrize("crash_at", [0, 1, 17, 59])
def test_crash_and_resume_equals_straight_run(tmp_path: Path, crash_at: int, snapshot_every_s: float) -> None:
    ref = HillClimber(4, seed=3)
    evolve(ref, make_evaluate([], fail=frozenset({5})), tmp_path / "ref", children=60)

    calls: list[int] = []
    with pytest.raises(Crash):
        evolve(HillClimber(4, seed=3), make_evaluate(calls, crash_at=crash_at, fail=frozenset({5})), tmp_path / "run",
               children=60, snapshot_every_s=snapshot_every_s)
    resumed = HillClimber(4, seed=3)
    progress = evolve(resumed, make_evaluate(calls, fail=frozenset({5})), tmp_path / "run", children=60,
                      snapshot_every_s=snapshot_every_s)
    assert calls == list(range(60)), "a child was evaluated twice or skipped"
    assert np.array_equal(resumed.best, ref.best) and resumed.best_score == ref.best_score
    assert progress.failed == 1
    assert "worker died" in (tmp_path / "run" / "failures.log").read_text()


def test_torn_journal_tail_is_dropped(tmp_path: Path) -> None:
    calls: list[int] = []
    with pytest.raises(Crash):
        evolve(HillClimber(3, seed=0), make_evaluate(calls, crash_at=10), tmp_path, children=20, snapshot_every_s=1e9)
    path = tmp_path / JOURNAL
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last record cut mid-payload
    records, valid = read_journal(path)
    assert [r.index for r in records] == list(range(9)) and valid < len(data)
    evolve(HillClimber(3, seed=0), make_evaluate(calls), tmp_path, children=20, snapshot_every_s=1e9)
    assert calls == [*range(10), *range(9, 20)]  # only the torn child 9 is evaluated again


def test_journal_round_trip_is_exact(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.bin")
    values = np.array([0.1, 1 / 3, -2e-300, 7.0])
    j.append(0, values, asked=3)
    j.append(1, None, asked=4)
    j.close()
    records, _ = read_journal(tmp_path / "j.bin")
    assert (records[0].index, records[0].asked) == (0, 3) and records[0].scores.tobytes() == values.tobytes()
    assert (records[1].index, records[1].asked, records[1].scores) == (1, 4, None)


def test_wrong_score_length_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvolutionError, match="returned 3 scores"):
        evolve(HillClimber(2, seed=0), lambda child: np.zeros(3), tmp_path, children=5)


def test_tell_without_ask_is_refused() -> None:
    algo = HillClimber(2, seed=0)
    with pytest.raises(EvolutionError):
        algo.tell(Child(0, np.zeros(2, np.float32)), np.zeros(2))


class ShuffledEvaluator:
    """Three children in flight; ``poll`` returns the one whose genome bytes hash lowest (out of ask order,
    deterministically given what is in flight). Child 7 fails; ``crash_at`` raises Crash at that evaluation."""

    def __init__(self, calls: list[int], crash_at: int | None = None) -> None:
        self.calls, self.crash_at, self.flight = calls, crash_at, []

    @property
    def capacity(self) -> int:
        return 3

    def submit(self, child: Child) -> None:
        self.flight.append(child)

    def poll(self, timeout: float | None = None) -> list:
        from evomerge.evolve.evaluators import Scored

        child = min(self.flight, key=lambda c: hash(c.genome.tobytes()) % 1000)
        self.flight.remove(child)
        if len(self.calls) == self.crash_at:
            raise Crash
        self.calls.append(child.index)
        if child.index == 7:
            return [Scored(child.index, None, "worker died")]
        return [Scored(child.index, np.exp(scores_of(child.genome)))]  # in (0, 1]: M2N2 needs scores >= 0

    def cancel(self) -> None:
        self.flight.clear()


def m2n2(seed: int):
    from evomerge.evolve.m2n2 import M2N2

    starts = [np.full(4, v, dtype=np.float32) for v in (0.0, 0.5, 2.0)]
    return M2N2(starts, 2, seed=seed, archive_size=4)


def told(algo: ModelEvolution) -> list[tuple[int, bytes | None]]:
    """Wraps ``algo.tell`` to log every (child, scores) it is told, in order."""
    log: list[tuple[int, bytes | None]] = []
    tell = algo.tell

    def logged(child: Child, scores: np.ndarray | None) -> None:
        log.append((child.index, None if scores is None else np.asarray(scores).tobytes()))
        tell(child, scores)

    algo.tell = logged  # type: ignore[method-assign]
    return log


@pytest.mark.parametrize("build", [lambda: HillClimber(4, seed=5), lambda: m2n2(5)], ids=["hill", "m2n2"])
@pytest.mark.parametrize("crash_at, snapshot_every_s", [(4, 1e9), (17, 0.0), (26, 1e9)])
def test_asynchronous_run_crashed_and_resumed_equals_the_uninterrupted_one(tmp_path, build, crash_at,
                                                                           snapshot_every_s):
    ref = build()
    ref_log = told(ref)
    ref_calls: list[int] = []
    evolve(ref, ShuffledEvaluator(ref_calls), tmp_path / "ref", children=40)
    assert ref.n_told == 40 and sorted(ref_calls) == list(range(40))
    assert [i for i, _ in ref_log] != sorted(i for i, _ in ref_log), "results should arrive out of ask order"

    calls: list[int] = []
    with pytest.raises(Crash):
        evolve(build(), ShuffledEvaluator(calls, crash_at), tmp_path / "run", children=40,
               snapshot_every_s=snapshot_every_s)
    resumed = build()
    log = told(resumed)
    evolve(resumed, ShuffledEvaluator(calls), tmp_path / "run", children=40, snapshot_every_s=snapshot_every_s)
    assert resumed.n_told == 40
    assert np.array_equal(resumed.best_genome(), ref.best_genome())
    if snapshot_every_s > 1e6:  # nothing snapshotted before the crash: the whole history is replayed
        assert log == ref_log
    else:
        assert log == ref_log[len(ref_log) - len(log):]
    # every child told was evaluated once; only those in flight at the crash (at most 3) ran twice
    repeated = len(calls) - len(set(calls))
    assert sorted(set(calls)) == list(range(40)) and repeated <= 3
