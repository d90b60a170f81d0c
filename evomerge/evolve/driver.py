"""Run a model-space evolution to its budget with exact resume: a snapshot now and then, a journal always.

A run folder holds ``evolution.pkl`` (the algorithm's ``state_dict`` plus elapsed time, written
atomically) and ``journal.bin`` (every child told since that snapshot). Resuming loads the snapshot,
asks the same children again and tells them their journaled scores — no child is evaluated twice,
whatever moment the process was killed at. Failed evaluations (an exception, NaN scores) are told as
failures and logged to ``failures.log``; one bad child never stops the run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evomerge import interrupt
from evomerge.evolve.base import Child, EvolutionError, ModelEvolution
from evomerge.evolve.journal import Journal, read_journal
from evomerge.study.checkpoint import load_pickle, save_pickle

SNAPSHOT = "evolution.pkl"
JOURNAL = "journal.bin"
FAILURES = "failures.log"


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


def evolve(algorithm: ModelEvolution, evaluate: Callable[[Child], np.ndarray | None], run_dir: str | Path, *,
           children: int | None = None, wall_time_s: float | None = None, snapshot_every_s: float = 30.0,
           on_progress: Callable[[EvolveProgress], None] | None = None) -> EvolveProgress:
    """Evolve until ``children`` have been told in total (or ``wall_time_s`` of run time); resumable.

    ``algorithm`` must be freshly built with the options of the original run: its state is loaded
    from the run folder when one exists.
    """
    if children is None and wall_time_s is None:
        raise EvolutionError("evolve needs a budget: children and/or wall_time_s")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    elapsed_before, failed = 0.0, 0
    if (run_dir / SNAPSHOT).exists():
        snap = load_pickle(run_dir / SNAPSHOT)
        algorithm.load_state_dict(snap["algorithm"])
        elapsed_before, failed = float(snap["elapsed_s"]), int(snap["failed"])
    records, valid = read_journal(run_dir / JOURNAL)
    replayed = 0
    for index, scores in records:
        if index < algorithm.n_told:
            continue  # already inside the snapshot (killed between snapshot and journal reset)
        if index != algorithm.n_told:
            raise EvolutionError(f"{run_dir / JOURNAL}: record for child {index} but the state expects "
                                 f"{algorithm.n_told}; the run folder is inconsistent")
        algorithm.tell(algorithm.ask(), scores)
        failed += scores is None
        replayed += 1
    journal = Journal(run_dir / JOURNAL, valid_length=valid)
    started = time.monotonic()
    last_snapshot = started

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def snapshot() -> None:
        save_pickle(run_dir / SNAPSHOT, {"algorithm": algorithm.state_dict(), "elapsed_s": elapsed(), "failed": failed})
        journal.reset()

    progress = EvolveProgress(algorithm.n_told, children, elapsed(), failed, replayed)
    if on_progress is not None:
        on_progress(progress)
    try:
        while (children is None or algorithm.n_told < children) and (wall_time_s is None or elapsed() < wall_time_s):
            child = algorithm.ask()
            scores = _safe_evaluate(evaluate, child, run_dir / FAILURES)
            if scores is not None and scores.size != algorithm.n_scores:
                raise EvolutionError(f"the evaluation of child {child.index} returned {scores.size} scores; "
                                     f"{algorithm.name} was built for {algorithm.n_scores}")
            journal.append(child.index, scores)
            algorithm.tell(child, scores)
            failed += scores is None
            if time.monotonic() - last_snapshot >= snapshot_every_s:
                snapshot()
                last_snapshot = time.monotonic()
            progress = EvolveProgress(algorithm.n_told, children, elapsed(), failed, replayed, child, scores)
            if on_progress is not None:
                on_progress(progress)
            if interrupt.requested():
                progress.stopped = True
                break
        snapshot()
    finally:
        journal.close()
    return progress


def _safe_evaluate(evaluate: Callable[[Child], np.ndarray | None], child: Child, log: Path) -> np.ndarray | None:
    try:
        scores = evaluate(child)
    except Exception:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"child {child.index}: {child.info}\n{traceback.format_exc()}\n")
        return None
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)):
        with open(log, "a", encoding="utf-8") as fh:
            bad = np.flatnonzero(~np.isfinite(scores))[:10]
            fh.write(f"child {child.index}: {child.info}\nnon-finite scores at positions {bad.tolist()}\n")
        return None
    return scores


def load_snapshot(run_dir: str | Path) -> dict:
    """The last snapshot of a run folder (for export and status)."""
    return load_pickle(Path(run_dir) / SNAPSHOT)
