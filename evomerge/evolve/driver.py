"""Run a model-space evolution to its budget with exact resume: a snapshot now and then, a journal always.

A run folder holds ``evolution.pkl`` (the algorithm's ``state_dict`` plus elapsed time, written
atomically) and ``journal.bin`` (every child told since that snapshot, with how many children had
been asked when it was told). Resuming loads the snapshot, asks the same children again at the same
points and tells them their journaled scores — no child told is evaluated twice, whatever moment the
process was killed at; children that were still being evaluated are evaluated again. Failed
evaluations (an exception, NaN scores) are told as failures and logged to ``failures.log``; one bad
child never stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evomerge import interrupt
from evomerge.evolve.base import Child, EvolutionError, ModelEvolution
from evomerge.evolve.evaluators import ChildEvaluator, InProcess, Scored
from evomerge.evolve.journal import Journal, Record, read_journal
from evomerge.study.checkpoint import load_pickle, save_pickle

SNAPSHOT = "evolution.pkl"
JOURNAL = "journal.bin"
FAILURES = "failures.log"
POLL_S = 1.0  # longest wait for a result before Ctrl-C and the wall-time budget are looked at again


@dataclass
class EvolveProgress:
    children: int  # told so far, this run and earlier ones
    budget: int | None
    elapsed_s: float
    failed: int
    replayed: int  # children told from the journal on this resume, without evaluation
    last: Child | None = None
    last_scores: np.ndarray | None = None
    stopped: bool = False  # Ctrl-C: the budget is not spent; resume continues
    workers: list = field(default_factory=list)  # per-worker snapshots when children are scored on Ray


def evolve(algorithm: ModelEvolution, evaluate: Callable[[Child], np.ndarray | None] | ChildEvaluator,
           run_dir: str | Path, *, children: int | None = None, wall_time_s: float | None = None,
           snapshot_every_s: float = 30.0, on_progress: Callable[[EvolveProgress], None] | None = None
           ) -> EvolveProgress:
    """Evolve until ``children`` have been told in total (or ``wall_time_s`` of run time); resumable.

    ``algorithm`` must be freshly built with the options of the original run: its state is loaded
    from the run folder when one exists. ``evaluate`` is a function (scored here, one child at a
    time) or a ``ChildEvaluator`` with workers (``OnRunner``): then every worker is kept busy, the
    algorithm is asked for a new child whenever a slot frees, and results are told as they arrive.
    """
    if children is None and wall_time_s is None:
        raise EvolutionError("evolve needs a budget: children and/or wall_time_s")
    evaluator = evaluate if hasattr(evaluate, "submit") else InProcess(evaluate)  # type: ignore[arg-type]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    elapsed_before, failed = 0.0, 0
    if (run_dir / SNAPSHOT).exists():
        snap = load_pickle(run_dir / SNAPSHOT)
        algorithm.load_state_dict(snap["algorithm"])
        elapsed_before, failed = float(snap["elapsed_s"]), int(snap["failed"])
    records, valid = read_journal(run_dir / JOURNAL)
    replayed, replayed_failed = _replay(algorithm, records, run_dir / JOURNAL)
    failed += replayed_failed
    journal = Journal(run_dir / JOURNAL, valid_length=valid)
    started = time.monotonic()
    last_snapshot = started

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def snapshot() -> None:
        save_pickle(run_dir / SNAPSHOT, {"algorithm": algorithm.state_dict(), "elapsed_s": elapsed(), "failed": failed})
        journal.reset()

    def stopping() -> bool:
        return interrupt.requested() or (wall_time_s is not None and elapsed() >= wall_time_s)

    def may_ask() -> bool:
        if stopping():
            return False
        in_flight = algorithm.n_asked - algorithm.n_told
        if children is not None and algorithm.n_told + in_flight >= children:
            return False
        return in_flight < max(1, evaluator.capacity) and algorithm.can_ask()

    progress = EvolveProgress(algorithm.n_told, children, elapsed(), failed, replayed)
    if on_progress is not None:
        on_progress(progress)
    for child in algorithm.pending:  # asked before the snapshot: evaluated again
        evaluator.submit(child)
    try:
        while True:
            while may_ask():
                evaluator.submit(algorithm.ask())
            if algorithm.n_asked == algorithm.n_told or stopping():
                break
            for done in evaluator.poll(POLL_S):
                child = algorithm.pending_child(done.index)
                assert child is not None, f"child {done.index} came back twice or was never asked"
                scores = _checked(done, child, run_dir / FAILURES)
                if scores is not None and scores.size != algorithm.n_scores:
                    raise EvolutionError(f"the evaluation of child {child.index} returned {scores.size} scores; "
                                         f"{algorithm.name} was built for {algorithm.n_scores}")
                journal.append(child.index, scores, algorithm.n_asked)
                algorithm.tell(child, scores)
                failed += scores is None
                if time.monotonic() - last_snapshot >= snapshot_every_s:
                    snapshot()
                    last_snapshot = time.monotonic()
                states = getattr(evaluator, "worker_states", None)
                progress = EvolveProgress(algorithm.n_told, children, elapsed(), failed, replayed, child, scores,
                                          workers=states() if callable(states) else [])
                if on_progress is not None:
                    on_progress(progress)
        progress.stopped = interrupt.requested()
        evaluator.cancel()
        snapshot()
    finally:
        journal.close()
    return progress


def _replay(algorithm: ModelEvolution, records: list[Record], path: Path) -> tuple[int, int]:
    """Tell the journaled children again, each after as many asks as when it was first told.

    Returns (children told, of which failed)."""
    replayed = failed = 0
    for record in records:
        if record.index < algorithm.n_asked and algorithm.pending_child(record.index) is None:
            continue  # already inside the snapshot (killed between snapshot and journal reset)
        while algorithm.n_asked < record.asked and algorithm.can_ask():
            algorithm.ask()
        child = algorithm.pending_child(record.index)
        if child is None:
            raise EvolutionError(f"{path}: record for child {record.index} (told after {record.asked} asks) but the "
                                 f"state has asked {algorithm.n_asked} and holds {[c.index for c in algorithm.pending]}"
                                 "; the run folder is inconsistent")
        algorithm.tell(child, record.scores)
        replayed += 1
        failed += record.scores is None
    return replayed, failed


def _checked(done: Scored, child: Child, log: Path) -> np.ndarray | None:
    """The child's scores, or None (logged to ``failures.log``) when it failed or scored NaN/inf."""
    if done.scores is None:
        if done.error is not None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"child {child.index}: {child.info}\n{done.error}\n")
        return None
    scores = np.asarray(done.scores, dtype=np.float64).reshape(-1)  # as the journal keeps them
    if not np.all(np.isfinite(scores)):
        with open(log, "a", encoding="utf-8") as fh:
            bad = np.flatnonzero(~np.isfinite(scores))[:10]
            fh.write(f"child {child.index}: {child.info}\nnon-finite scores at positions {bad.tolist()}\n")
        return None
    return scores


def load_snapshot(run_dir: str | Path) -> dict:
    """The last snapshot of a run folder (for export and status)."""
    return load_pickle(Path(run_dir) / SNAPSHOT)
