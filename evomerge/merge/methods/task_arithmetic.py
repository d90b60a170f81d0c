"""Task arithmetic (arXiv 2212.04089) and the generalised form every task-vector method shares.

θ = θ₀ + λ · Σ_k w_k·s(τ_k) [/ normaliser], where s is an optional
sparsifier (TIES trim, DARE, breadcrumbs, DELLA) and the sum is either plain or
a TIES sign-consensus disjoint mean. This is mergekit's
``GeneralizedTaskArithmeticMerge``: sparsify each task vector, weight it,
optionally elect signs, normalise (plain: by Σ_k w_k, left at 1 when
|Σ_k w_k| < 1e-8; consensus: by the agreeing weights), then multiply by
``lambda`` and add the base.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.consensus import disjoint_merge
from evomerge.merge.methods.params import weights_of

# (source index, its task vector) -> the sparsified task vector (the input itself or a new tensor)
Sparsifier = Callable[[int, torch.Tensor], torch.Tensor]

# mergekit: a plain sum is not normalised when the weights sum to (about) zero.
_ZERO_WEIGHT_SUM = 1e-8
# Sparsifying large CPU tensors runs one source per thread: the selection kernels
# (kthvalue, DELLA's ranking) are single-threaded, so sources in parallel use every core.
_PARALLEL_MIN_NUMEL = 1 << 20
_POOL: ThreadPoolExecutor | None = None


def _sparsify_all(deltas: Sequence[torch.Tensor], sparsify: Sparsifier) -> list[torch.Tensor]:
    """``sparsify`` applied to every source; concurrently when it pays (results identical either way:
    randomised sparsifiers hold one pre-seeded generator per source)."""
    global _POOL
    workers = min(len(deltas), os.cpu_count() or 1)
    if workers < 2 or deltas[0].device.type != "cpu" or deltas[0].numel() < _PARALLEL_MIN_NUMEL:
        return [sparsify(k, d) for k, d in enumerate(deltas)]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count(), thread_name_prefix="evomerge-sparsify")
    return list(_POOL.map(lambda kd: sparsify(*kd), enumerate(deltas)))


def merge_task_vectors(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    normalize: bool,
    lam: float = 1.0,
    sparsify: Sparsifier | None = None,
    consensus: bool = False,
) -> torch.Tensor:
    """θ₀ + λ·merge_k(w_k·sparsify(τ_k)); never writes into ``base`` or ``deltas``."""
    weighted: list[torch.Tensor] = []
    merged: torch.Tensor | None = None
    sparse = list(deltas) if sparsify is None else _sparsify_all(deltas, sparsify)
    for delta, kept, w in zip(deltas, sparse, weights, strict=True):
        if consensus:
            weighted.append(kept.mul_(w) if kept is not delta else kept * w)
        elif merged is None:
            merged = kept.mul_(w) if kept is not delta else kept * w
        else:
            merged.add_(kept, alpha=w)
    if consensus:
        merged = disjoint_merge(weighted, weights, normalize=normalize)
    else:
        assert merged is not None
        if normalize:
            total = float(sum(weights))
            if abs(total) >= _ZERO_WEIGHT_SUM:
                merged.div_(total)
    if lam != 1:
        merged.mul_(lam)
    return merged.add_(base)


def _task_arithmetic(inputs: MergeInputs, params: Mapping[str, object],
                     generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    return merge_task_vectors(inputs.base, inputs.deltas, weights_of(params),
                              normalize=bool(params["normalize"]), lam=float(cast(float, params["lambda"])))
