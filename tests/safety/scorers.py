"""Function-runner targets and a CLI entry for the safety tests (run as a subprocess with this folder on PYTHONPATH).

Environment:
  SAFETY_SLOW_S   seconds each evaluation sleeps, so a run is still going when a second process arrives
  SAFETY_BROKEN   set: `fails_until_fixed` fails every candidate alike (a scorer that is down)
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def slow_sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    time.sleep(float(os.environ.get("SAFETY_SLOW_S", "0")))
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def fails_until_fixed(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Fails while SAFETY_BROKEN is set (the user's typo), scores once it is unset (the fix)."""
    if os.environ.get("SAFETY_BROKEN"):
        raise RuntimeError("scorer unreachable: connection refused")
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


if __name__ == "__main__":
    from evomerge.cli import main

    sys.argv = ["evomerge", *sys.argv[1:]]
    main()
