"""Run the evomerge CLI with injected faults, for kill-and-resume tests (used as a subprocess entry point).

Environment:
  EVOMERGE_SLOW_S       seconds each synthetic evaluation sleeps (makes kill points land mid-evaluation)
  EVOMERGE_CRASH_AT     "checkpoint:N" — os._exit(9) right before the N-th checkpoint write (after a tell)
                        "record:N"     — os._exit(9) right after the N-th trial is recorded
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def slow_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    time.sleep(float(os.environ.get("EVOMERGE_SLOW_S", "0")))
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def slow_zdt1(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    from evomerge.exec.synthetic import zdt1

    time.sleep(float(os.environ.get("EVOMERGE_SLOW_S", "0")))
    return zdt1(genome)


def _install_crash() -> None:
    spec = os.environ.get("EVOMERGE_CRASH_AT")
    if not spec:
        return
    where, _, n = spec.partition(":")
    target = int(n)
    from evomerge.study import record, study

    counter = {"n": 0}
    if where == "checkpoint":
        original = study.Study._save_checkpoint

        def save(self, elapsed, **kw):  # type: ignore[no-untyped-def]
            counter["n"] += 1
            if counter["n"] == target:
                os._exit(9)
            original(self, elapsed, **kw)

        study.Study._save_checkpoint = save  # type: ignore[method-assign]
    elif where == "record":
        original_add = record.TrialStore.add

        def add(self, *a, **k):  # type: ignore[no-untyped-def]
            number = original_add(self, *a, **k)
            counter["n"] += 1
            if counter["n"] == target:
                os._exit(9)
            return number

        record.TrialStore.add = add  # type: ignore[method-assign]


if __name__ == "__main__":
    _install_crash()
    from evomerge.cli import main

    sys.argv = ["evomerge", *sys.argv[1:]]
    main()
