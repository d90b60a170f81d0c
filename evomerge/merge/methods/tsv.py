"""TSV-M, Task Singular Vectors: Merge (Gargiulo et al., arXiv 2412.00081).

Each task vector of a matrix is compressed to its top 1/T singular triplets
(T tasks: r = ⌊min(m, n)/T⌋ each); the kept left and right singular vectors of
all tasks are concatenated and decorrelated by replacing each concatenation by
its nearest orthonormal matrix (the polar factor U·Vᴴ of its SVD: this removes
the interference between tasks' subspaces), and the matrix is rebuilt with the
tasks' own singular values: Δ = P_U·diag(σ)·P_Vᴴ. Tensors that are not matrices
(norms, biases) take the mean of the task vectors. θ = θ₀ + λ·Δ (the paper's
α, default 1).

Facts from the reference implementation (FusionBench
``task_singular_vector/utils/TSVM_utils.py``, ``compute_and_sum_svd_mem_reduction``)
kept: the rank split ⌊k/T⌋ and the placement of task i's block at columns
i·r…(i+1)·r; the polar factor is taken of the nonzero blocks only (the
reference pads with zero columns, whose completion multiplies singular values
of 0 and changes nothing). SVDs run in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch

from evomerge.merge.base import MergeInputs


def mean_of(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The element-wise mean; a new tensor."""
    out = tensors[0].clone()
    for x in tensors[1:]:
        out.add_(x)
    return out.div_(len(tensors))


def polar_factor(a: torch.Tensor) -> torch.Tensor:
    """The orthonormal matrix nearest to ``a`` in Frobenius norm: U·Vᴴ of its thin SVD."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def tsv_merge_matrix(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """TSV-M's merged task vector of one matrix (before λ)."""
    k = min(deltas[0].shape)
    r = k // len(deltas)
    if r == 0:  # more tasks than dimensions: no triplet to keep per task (the reference gives 0 too)
        return torch.zeros_like(deltas[0])
    us, ss, vhs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        us.append(u[:, :r])
        ss.append(s[:r])
        vhs.append(vh[:r])
    u_orth = polar_factor(torch.cat(us, dim=1))
    vh_orth = polar_factor(torch.cat(vhs, dim=0))
    return (u_orth * torch.cat(ss)) @ vh_orth


def _tsv_m(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    deltas = inputs.deltas
    merged = tsv_merge_matrix(deltas) if deltas[0].dim() == 2 else mean_of(deltas)
    return merged.mul_(float(cast(float, params["lambda"]))).add_(inputs.base)
