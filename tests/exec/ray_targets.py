"""Function targets for the Ray runner tests, pickled by value to the actors (no import path needed there)."""

from __future__ import annotations

import os
import time

import numpy as np


def slow_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """The sphere (minimum at 0.3), taking long enough that a worker can be killed mid-candidate."""
    time.sleep(0.15)
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def timed_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Sleeps genome[0] seconds, so the finishing order differs from the submission order."""
    time.sleep(float(genome[0]))
    return {"sphere": float(np.sum((genome - 0.3) ** 2)), "pid": float(os.getpid())}


def flaky_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Raises for genome[0] > 0.5: an exception inside a candidate."""
    if genome[0] > 0.5:
        raise RuntimeError(f"this candidate breaks the merge (x0={genome[0]:.2f})")
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def lethal_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Kills its own worker process for genome[0] > 0.9 (a candidate that segfaults or runs out of memory)."""
    if genome[0] > 0.9:
        os._exit(1)
    time.sleep(0.05)
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}
