"""Iso-C and Iso-CTS, isotropic merging (Marczak et al., arXiv 2502.04959).

Iso-C: the sum of the task vectors of a matrix, M = Σ_k τ_k = U·diag(σ)·Vᴴ,
is made isotropic in its own subspace by replacing every singular value with
their mean: Δ = σ̄·U·Vᴴ. Tensors that are not matrices take the mean of the
task vectors. θ = θ₀ + λ·Δ (the paper's α).

Iso-CTS also keeps task-specific directions: the top c = ⌊k·f⌋ singular
directions of M (f = ``common_space_fraction``, adjusted so that the rest
divides evenly among the T tasks) form the common subspace; each task's
vector, projected off the common left subspace, contributes its top (k − c)/T
directions; the left and right direction sets are orthonormalised (polar
factor) and every singular value is replaced by the mean of the kept ones.

Facts from the reference implementation (FusionBench
``isotropic_merging/iso_utils.py``) kept: the common size c = k −
round((k − ⌊k·f⌋)/T)·T (Python's round, halves to even); task blocks first,
then the common block; the paper's default f = 0.8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.tsv import mean_of, polar_factor


def iso_c_matrix(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Iso-C's merged task vector of one matrix (before λ): σ̄·U·Vᴴ of Σ_k τ_k."""
    total = deltas[0].clone()
    for d in deltas[1:]:
        total.add_(d)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return (u @ vh).mul_(s.mean())


def common_size(k: int, n_tasks: int, fraction: float) -> int:
    """The common subspace's size: ⌊k·f⌋ moved so that k − c divides evenly among the tasks."""
    c = int(k * fraction)
    return k - round((k - c) / n_tasks) * n_tasks


def iso_cts_matrix(deltas: Sequence[torch.Tensor], fraction: float) -> torch.Tensor:
    """Iso-CTS's merged task vector of one matrix (before λ)."""
    k = min(deltas[0].shape)
    c = common_size(k, len(deltas), fraction)
    per_task = (k - c) // len(deltas)
    total = deltas[0].clone()
    for d in deltas[1:]:
        total.add_(d)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    uc, sc, vhc = u[:, :c], s[:c], vh[:c]
    us, ss, vhs = [], [], []
    if per_task > 0:
        for d in deltas:
            specific = d - uc @ (uc.T @ d)
            ut, st, vht = torch.linalg.svd(specific, full_matrices=False)
            us.append(ut[:, :per_task])
            ss.append(st[:per_task])
            vhs.append(vht[:per_task])
    u_all = torch.cat([*us, uc], dim=1)
    vh_all = torch.cat([*vhs, vhc], dim=0)
    sigma = torch.cat([*ss, sc]).mean()
    return (polar_factor(u_all) @ polar_factor(vh_all)).mul_(sigma)


def _iso(specific: bool):
    def fn(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
        assert inputs.base is not None
        deltas = inputs.deltas
        if deltas[0].dim() != 2:
            merged = mean_of(deltas)
        elif specific:
            merged = iso_cts_matrix(deltas, float(cast(float, params["common_space_fraction"])))
        else:
            merged = iso_c_matrix(deltas)
        return merged.mul_(float(cast(float, params["lambda"]))).add_(inputs.base)

    return fn


# The entry points evomerge.merge.catalog names for this module's methods.
_iso_c = _iso(False)
_iso_cts = _iso(True)
