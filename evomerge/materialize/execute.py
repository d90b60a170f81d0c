"""Executing one planned tensor: gather its inputs, run its method. Shared by both materializers.

Whenever the recipe has a base model, inputs are handed to the method as base +
task vectors (source − base, in float32), in the streaming path exactly as in
the resident path where task vectors are precomputed once; this is why both
paths give bit-identical weights.
"""

from __future__ import annotations

import threading
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


def run_task(task: TensorTask, base: torch.Tensor | None, deltas_or_sources: list[torch.Tensor],
             orders: list | None = None) -> torch.Tensor:
    """Merge one tensor from already gathered float32 inputs; refuse a non-finite result.

    ``orders``: the task vectors' precomputed magnitude orders (a resident worker's), same result, faster.
    """
    method = get_method(task.method)
    if base is not None:
        inputs = MergeInputs(task.out_name, base, deltas=deltas_or_sources, orders=orders)
    else:
        inputs = MergeInputs(task.out_name, None, sources=deltas_or_sources)
    merged = method(inputs, task.params, seed=task.seed)
    if not all_finite(merged):
        raise NonFiniteMergeError(f"tensor '{task.out_name}': method '{task.method}' produced NaN/inf values "
                         f"with parameters {dict(task.params)}")
    return merged


class BufferPool:
    """Float32 CPU buffers for task inputs, handed back once a task is written and reused by a later one.

    A fresh large tensor costs its page faults (a 100 MB tensor comes straight from
    the kernel and goes back to it when freed): widening a bf16 source into a
    reused buffer is about three times faster than into a new one. Only tensors of
    ``min_numel`` entries or more are pooled (smaller ones are recycled by malloc
    anyway). The streaming loop keeps at most two tasks' inputs alive, so the pool
    holds about two sets of buffers per tensor size. The loop hands a task's inputs
    back once its result is written: merge methods are pure and keep no reference
    to their inputs, so nothing reads a buffer after that.
    """

    def __init__(self, min_numel: int = 1 << 20) -> None:
        self.min_numel = min_numel
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def widen(self, source: torch.Tensor) -> torch.Tensor:
        """``source.float()``, in a pooled buffer when it is large and on the CPU."""
        n = source.numel()
        if n < self.min_numel or source.device.type != "cpu":
            return source.to(torch.float32, copy=True)
        with self._lock:
            free = self._free.get(n)
            flat = free.pop() if free else None
        if flat is None:
            flat = torch.empty(n, dtype=torch.float32)
        return flat.view(source.shape).copy_(source)

    def give_back(self, tensors: list[torch.Tensor]) -> None:
        """Return the pooled buffers among ``tensors`` (a finished task's inputs) for reuse."""
        with self._lock:
            for t in tensors:
                if t.numel() >= self.min_numel and t.device.type == "cpu" and t.dtype == torch.float32 \
                        and t.is_contiguous() and t.storage_offset() == 0 \
                        and t.untyped_storage().nbytes() == 4 * t.numel():
                    self._free.setdefault(t.numel(), []).append(t.view(-1))


def vocabulary_fetch(task: TensorTask, fetch: Fetch) -> Fetch:
    """``fetch`` for a vocabulary tensor: every input's rows laid out in the merged vocabulary (in float32)."""
    assert task.vocab is not None
    name = (task.base or task.sources[0]).name
    rows = task.vocab.assemble({m: fetch(TensorRef(m, name)).float() for m in task.vocab.models})
    return lambda ref: rows[ref.model]


def gather_from_sources(task: TensorTask, fetch: Fetch, pool: BufferPool | None = None
                        ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Read a task's inputs from full source weights, as (base, task vectors) when it has a base.

    With a ``pool`` the float32 inputs are written into its buffers (same values).
    """
    def widen(t: torch.Tensor) -> torch.Tensor:  # a float32 copy of t that this task owns
        return pool.widen(t) if pool is not None else t.to(torch.float32, copy=True)

    if task.vocab is not None:
        fetch = vocabulary_fetch(task, fetch)

    if task.base is None:
        if pool is None:
            return None, [fetch(r).float() for r in task.sources]
        return None, [widen(fetch(r)) for r in task.sources]
    base = widen(fetch(task.base))
    deltas = []
    for ref in task.sources:
        # source.float() - base, subtracting in place into the widened copy (a mixed-dtype torch.sub
        # would avoid the copy but is not vectorised on CPU)
        deltas.append(torch.zeros_like(base) if ref == task.base else widen(fetch(ref)).sub_(base))
    return base, deltas
