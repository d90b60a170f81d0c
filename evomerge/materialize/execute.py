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

Fetch = Callable[[TensorRef], torch.Tensor]


def run_task(task: TensorTask, base: torch.Tensor | None, deltas_or_sources: list[torch.Tensor]) -> torch.Tensor:
    """Merge one tensor from already gathered float32 inputs; refuse a non-finite result."""
    method = get_method(task.method)
    if base is not None:
        inputs = MergeInputs(task.out_name, base, deltas=deltas_or_sources)
    else:
        inputs = MergeInputs(task.out_name, None, sources=deltas_or_sources)
    merged = method(inputs, task.params, seed=task.seed)
    if not bool(torch.isfinite(merged).all()):
        raise MergeError(f"tensor '{task.out_name}': method '{task.method}' produced NaN/inf values "
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
