"""Arcee Fusion: keep only a fine-tune's most important changes (mergekit's ``arcee_fusion``; no paper).

For a base θ₀ and one model θ₁, an entry's importance is |θ₁ − θ₀| times the
KL divergence between the softmax of θ₁'s and θ₀'s vector along the last
dimension (one divergence per row, each softmax + 1e-8). Entries whose
importance reaches median + 1.5·(Q3 − Q1) take θ₁'s value, the rest keep the
base's: θ = θ₀ + (θ₁ − θ₀)·[importance ≥ threshold].

mergekit facts kept: a quantile q is the sorted importances' entry at index
⌊q·(n − 1)⌋ (no interpolation). Difference: above 1,000,000 entries mergekit
estimates the quantiles from 1,000,000 entries drawn at random with
replacement from the global torch RNG (unseeded: two runs differ); evomerge
always takes the exact quantiles, so its result is deterministic and equals
mergekit's exactly on tensors up to that size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evomerge.merge.base import MergeInputs

_SOFTMAX_EPS = 1e-8


def quantile_floor(flat: torch.Tensor, q: float) -> torch.Tensor:
    """The sorted ``flat``'s entry at index ⌊q·(n − 1)⌋, without sorting."""
    return torch.kthvalue(flat, int(q * (flat.numel() - 1)) + 1).values


def fusion_mask(importance: torch.Tensor) -> torch.Tensor:
    """True where the importance reaches median + 1.5·IQR (Tukey's upper fence)."""
    flat = importance.reshape(-1)
    q1, median, q3 = (quantile_floor(flat, q) for q in (0.25, 0.5, 0.75))
    return importance >= median + 1.5 * (q3 - q1)


def arcee_fusion(base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """θ₀ + τ where the change τ = θ₁ − θ₀ is important; a new tensor.

    θ₁ is taken as θ₀ + τ (not the model's own tensor, equal up to rounding) so that full weights and
    resident task vectors give the same bits.
    """
    model = base + delta
    importance = delta.abs().mul_(_row_divergence(model, base))
    return (delta * fusion_mask(importance)).add_(base)


def _row_divergence(model: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(model, dim=-1) + _SOFTMAX_EPS
    q = torch.softmax(base, dim=-1) + _SOFTMAX_EPS
    return torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def _arcee_fusion(inputs: MergeInputs, params: Mapping[str, object],
                  generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    (delta,) = inputs.deltas
    return arcee_fusion(inputs.base, delta)
