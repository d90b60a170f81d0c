"""The seeded example order racing scores in, and how many examples each stage has scored.

The order of a task's examples is a permutation drawn from ``(order_seed, task name)``, the same for
every candidate of the run (so two candidates are compared on the same examples) and replayed by a
resume (the seed is part of the run config). Each stage's examples are therefore a simple random
sample without replacement of the split, which is what the bound in ``evomerge.racing.bound`` assumes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np


def example_order(n: int, seed: int, task: str) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``seed`` and the task's name."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.encode("utf-8"))])
    return rng.permutation(n)


def stage_counts(n: int, stages: Sequence[float]) -> list[int]:
    """Examples scored once each stage is done: ``ceil(fraction * n)``, at least 1, the last one ``n``."""
    counts = [min(n, max(1, math.ceil(f * n - 1e-9))) for f in stages]
    counts[-1] = n
    return counts
