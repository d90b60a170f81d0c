"""Executing one planned tensor: gather its inputs, run its method. Shared by both materializers.

Whenever the recipe has a base model, inputs are handed to the method as base +
task vectors (source − base, in float32), in the streaming path exactly as in
the resident path where task vectors are precomputed once; this is why both
paths give bit-identical weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from evomerge.errors import MergeError
from evomerge.materialize.plan import TensorRef, TensorTask
from evomerge.merge.base import MergeInputs
from evomerge.merge.registry import get_method


class NonFiniteMergeError(MergeError):
    """A merged tensor holds NaN/inf (from a source, or from extreme parameters)."""


Fetch = Callable[[TensorRef], torch.Tensor]


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN/inf, in one fast reduction.

    NaN and inf propagate through a float32 sum, so a finite sum proves every
    entry finite; only a (never seen) overflowing sum falls back to the exact,
    much slower elementwise test (``isfinite`` on bf16 costs ~50x a sum on CPU).
    """
    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(tensor).all())


def run_task(task: TensorTask, base: torch.Tensor | None, deltas_or_sources: list[torch.Tensor]) -> torch.Tensor:
    """Merge one tensor from already gathered float32 inputs; refuse a non-finite result."""
    method = get_method(task.method)
    if base is not None:
        inputs = MergeInputs(task.out_name, base, deltas=deltas_or_sources)
    else:
        inputs = MergeInputs(task.out_name, None, sources=deltas_or_sources)
    merged = method(inputs, task.params, seed=task.seed)
    if not all_finite(merged):
        raise NonFiniteMergeError(f"tensor '{task.out_name}': method '{task.method}' produced NaN/inf values "
                         f"with parameters {dict(task.params)}")
    return merged


def gather_from_sources(task: TensorTask, fetch: Fetch) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Read a task's inputs from full source weights, as (base, task vectors) when it has a base."""
    if task.base is None:
        return None, [fetch(r).float() for r in task.sources]
    base = fetch(task.base).float()
    deltas = []
    for ref in task.sources:
        deltas.append(torch.zeros_like(base) if ref == task.base else fetch(ref).float() - base)
    return base, deltas
