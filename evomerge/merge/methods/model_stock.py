"""Model Stock (Jang et al., arXiv 2403.19522): interpolate the sources' average toward the base
by a ratio fixed by the angle between their task vectors.

t = k·cos θ / (1 + (k − 1)·cos θ), merged = t·mean_k(θ_k) + (1 − t)·θ₀, computed
here as θ₀ + t·mean_k(τ_k) (the same thing) so that full weights and resident
task vectors give identical results. mergekit facts kept: with k > 2 sources
cos θ is the mean of the pairwise cosines; each cosine divides by the product
of norms clamped at 1e-6 and is clamped to [−1, 1]; ``filter_wise`` (default
false) computes one t per row (last dimension; a 1-D tensor is one row)
instead of one per tensor. Where |1 + (k − 1)·cos θ| < 1e-6 (t undefined or
huge) the base is returned (t = 0), as mergekit 0.1.5 does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

from evomerge.merge.base import MergeInputs

NORM_PRODUCT_EPS = 1e-6
_SINGULAR = 1e-6  # |1 + (k − 1)·cos θ| below this: t is undefined, keep the base (mergekit 0.1.5's bound)


def model_stock_ratio(deltas: Sequence[torch.Tensor], *, filter_wise: bool = False) -> torch.Tensor:
    """The interpolation ratio t: a 0-d tensor, or shape (rows, 1) with ``filter_wise``."""
    # filter-wise: one row per output unit (a 1-D tensor is a single row); else one flat vector
    rows = [(d.unsqueeze(0) if d.dim() < 2 else d) if filter_wise else d.reshape(-1) for d in deltas]
    norms = [torch.linalg.vector_norm(r, dim=-1) for r in rows]
    cosines = [
        ((rows[i] * rows[j]).sum(dim=-1) / (norms[i] * norms[j]).clamp(min=NORM_PRODUCT_EPS)).clamp(-1, 1)
        for i, j in combinations(range(len(rows)), 2)
    ]
    cos = torch.stack(cosines).mean(dim=0)
    k = len(deltas)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < _SINGULAR
    t = torch.where(singular, torch.zeros_like(cos), k * cos / torch.where(singular, 1.0, denominator))
    return t.unsqueeze(-1) if filter_wise else t


def model_stock_merge(base: torch.Tensor, deltas: Sequence[torch.Tensor], *,
                      filter_wise: bool = False) -> torch.Tensor:
    """θ₀ + t·mean_k(τ_k); a new tensor."""
    t = model_stock_ratio(deltas, filter_wise=filter_wise)
    mean = deltas[0].clone()
    for d in deltas[1:]:
        mean.add_(d)
    mean.div_(len(deltas))
    shaped = mean.unsqueeze(0) if filter_wise and mean.dim() < 2 else mean
    shaped.mul_(t)
    return mean.add_(base)


def _model_stock(inputs: MergeInputs, params: Mapping[str, object],
                 generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    return model_stock_merge(inputs.base, inputs.deltas, filter_wise=bool(params["filter_wise"]))
