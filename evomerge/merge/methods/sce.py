"""SCE: select, calculate, erase (FuseChat, Wan et al., arXiv 2408.07990; mergekit's ``sce``).

Per tensor, over the task vectors τ_k = θ_k − θ₀:
1. *select*: with ``select_topk`` < 1, keep the entries whose variance across
   the sources (population variance) is among the top ``select_topk`` fraction
   of the *nonzero* variances (k = int(nonzero · select_topk)), in every τ_k;
2. *calculate*: each source's coefficient is the mean of its selected τ_k²,
   over their sum (equal coefficients when the sum is below 1e-6);
3. *erase*: TIES sign election on the selected task vectors (sum rule); an
   entry counts only where its sign agrees with the elected one;
θ = θ₀ + Σ_k c_k·m_k·τ_k / max(Σ_k c_k·m_k, 1e-6).

mergekit facts kept: no per-model weight; ``select_topk`` defaults to 1 (no
selection) and ≤ 0 selects nothing; ties in variance are broken by position
here (mergekit's ``topk`` leaves them unspecified; the kept count is the same).
``int8_mask`` is accepted and has no effect (see ``params.INT8_MASK``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.consensus import agreement
from evomerge.merge.methods.sparsify import top_k_mask

_WEIGHT_SUM_EPS = 1e-6
_DIVISOR_MIN = 1e-6


def variance_select_mask(deltas: Sequence[torch.Tensor], fraction: float) -> torch.Tensor | None:
    """Boolean mask of the entries with the top ``fraction`` of nonzero cross-source variances; None: all."""
    if fraction >= 1:
        return None
    if fraction <= 0:
        return torch.zeros_like(deltas[0], dtype=torch.bool)
    var = torch.var(torch.stack(list(deltas)), dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * fraction)
    return top_k_mask(var, k)


def sce_coefficients(deltas: Sequence[torch.Tensor]) -> list[float]:
    """Each task vector's mean square over the sum of them (uniform when that sum is about zero)."""
    scores = torch.stack([d.square().mean() for d in deltas])
    total = float(scores.sum())
    if abs(total) < _WEIGHT_SUM_EPS:
        return [1.0 / len(deltas)] * len(deltas)
    return (scores / total).tolist()


def sce_merge(base: torch.Tensor, deltas: Sequence[torch.Tensor], select_topk: float) -> torch.Tensor:
    """θ₀ + the sign-consensus, variance-weighted mean of the selected task vectors; a new tensor."""
    mask = variance_select_mask(deltas, select_topk)
    selected = [d if mask is None else d * mask for d in deltas]
    coefficients = sce_coefficients(selected)
    total = torch.zeros_like(base)
    for d in selected:
        total.add_(d)
    positive = total >= 0
    merged = torch.zeros_like(base)
    divisor = torch.zeros_like(base)
    for d, c in zip(selected, coefficients, strict=True):
        erased = agreement(d, positive).to(base.dtype).mul_(c)
        merged.addcmul_(d, erased)
        divisor.add_(erased)
    return merged.div_(divisor.clamp_(min=_DIVISOR_MIN)).add_(base)


def _sce(inputs: MergeInputs, params: Mapping[str, object], generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    return sce_merge(inputs.base, inputs.deltas, float(cast(float, params["select_topk"])))
