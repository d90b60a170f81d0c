"""A runner whose fitness is a Python function of the genome: custom black boxes and known test problems.

``target`` names a callable ``module:function`` taking ``(genome, recipe)`` and
returning ``{objective: value}`` (optionally ``(objectives, per_example)``). It
is how the Study's durability is tested at speed on problems with known
optima, and how a user plugs in a scorer that needs no model.
"""

from __future__ import annotations

import importlib
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate, EvalResult, Runner


def resolve_target(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ConfigError(f"runner.target '{target}' must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"runner.target '{target}' cannot be imported: {exc}") from None


class FunctionRunner(Runner):
    def __init__(self, target: str | Callable) -> None:
        self.fn = resolve_target(target) if isinstance(target, str) else target

    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]:
        for c in candidates:
            t0 = time.perf_counter()
            try:
                out = self.fn(np.asarray(c.genome), c.recipe)
                objectives, per_example = out if isinstance(out, tuple) else (out, {})
                objectives = {k: float(v) for k, v in objectives.items()}
            except Exception:
                yield EvalResult(key=c.key, status="failed", error=traceback.format_exc(), worker="function")
                continue
            bad = {k: v for k, v in objectives.items() if not math.isfinite(v)}
            status = "failed" if bad else "ok"
            yield EvalResult(key=c.key, status=status, objectives=objectives, per_example=per_example,
                             error=f"non-finite objective(s): {bad}" if bad else None,
                             fitness_seconds=time.perf_counter() - t0, worker="function")
