"""A scripted ask/tell driver: the same script run straight through or interrupted by a state round-trip.

A script is a list of operations: ``("ask", n)`` (``n=None``: the natural batch) and ``("tell", k)``
(tell the ``k`` oldest untold genomes, ``None`` = all). Objective values are a deterministic
function of the genome, with failures (``None`` and NaN) sprinkled in.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from evomerge.strategies import Problem, Strategy, make_strategy

Op = tuple[str, int | None]
Objective = Callable[[np.ndarray], Sequence[float] | None]


def flaky(objective: Callable[[np.ndarray], list[float]]) -> Objective:
    """Wrap ``objective`` so that about one genome in seven fails (``None``) and one in eleven gives NaN."""

    def wrapped(x: np.ndarray) -> Sequence[float] | None:
        bucket = int(abs(x[0]) * 1e6) % 77
        if bucket % 7 == 0:
            return None
        values = objective(x)
        if bucket % 11 == 0:
            return [float("nan")] * len(values)
        return values

    return wrapped


def run_script(
    strategy: Strategy,
    ops: Sequence[Op],
    objective: Objective,
    *,
    interrupt_at: int | Iterable[int] | None = None,
    rebuild: Callable[[], Strategy] | None = None,
    queue: list[np.ndarray] | None = None,
) -> tuple[Strategy, list[np.ndarray]]:
    """Run ``ops``; before op ``interrupt_at`` (or each op in it), pickle the state and continue on a rebuilt
    strategy.

    Returns the final strategy and every genome asked, in order. After the restore the untold queue
    is taken from the restored strategy's ``pending()``, as a restarted Study would do.
    """
    asked: list[np.ndarray] = []
    queue = [] if queue is None else queue
    interrupts = {interrupt_at} if isinstance(interrupt_at, int) else set(interrupt_at or ())
    for i, (op, n) in enumerate(ops):
        if i in interrupts:
            blob = pickle.dumps(strategy.state_dict())
            assert rebuild is not None
            strategy = rebuild()
            strategy.load_state_dict(pickle.loads(blob))
            restored = strategy.pending()
            assert len(restored) == len(queue) and all(
                np.array_equal(a, b) for a, b in zip(restored, queue, strict=True)
            )
            queue = restored
        if op == "ask":
            got = strategy.ask(n)
            asked += got
            queue += got
        else:
            k = len(queue) if n is None else min(n, len(queue))
            batch, queue = queue[:k], queue[k:]
            strategy.tell(batch, [objective(g) for g in batch])
    return strategy, asked


def build(name: str, problem: Problem, seed: int, options: dict[str, Any]) -> Strategy:
    return make_strategy(name, problem, seed=seed, **options)
