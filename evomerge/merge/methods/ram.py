"""RAM, Reinforced Agent Merging (arXiv 2601.13572; mergekit's ``ram`` and ``ramplus_tl``).

Per entry, the task vectors τ_k = θ_k − θ₀ that are "active" (|τ_k| > ε)
are counted. An entry only one model changes keeps that change in full; one
that several change takes their mean over the active ones (inactive entries
count as zero): θ = θ₀ + Σ_k a_k·τ_k·([c = 1] + [c > 1]/c), with a_k the
activity mask and c = Σ_k a_k.

RAM+ (tensor-local, ``ramplus_tl``) also amplifies each model's unique
entries by λ_k = 1 + r·clamp(ρ_k, 0, α), where ρ_k is the ratio of the
model's shared to its unique active entries in this tensor (the unique count
clamped below at ε).

mergekit facts kept: defaults ε = 1e-5, r = 0.1, α = 0.2; no per-model weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch

from evomerge.merge.base import MergeInputs


def ram_merge(base: torch.Tensor, deltas: Sequence[torch.Tensor], *, epsilon: float,
              r: float | None = None, alpha: float = 0.0) -> torch.Tensor:
    """RAM (``r`` None) or RAM+ (amplify unique entries by 1 + r·clamp(ρ_k, 0, α)); a new tensor."""
    active = [d.abs() > epsilon for d in deltas]
    counts = torch.zeros(base.shape, dtype=torch.int64, device=base.device)
    for a in active:
        counts += a
    unique = counts == 1
    overlap = counts > 1
    divisor = counts.clamp(min=1)
    merged = torch.zeros_like(base)
    for d, a in zip(deltas, active, strict=True):
        kept = d * a
        own = kept * unique
        if r is not None:
            n_shared = (a & overlap).sum()
            n_unique = (a & unique).sum()
            rho = n_shared / n_unique.clamp(min=epsilon)
            own = own * (1 + r * rho.clamp(min=0, max=alpha))
        merged += own + kept * overlap / divisor
    return merged.add_(base)


def _ram(plus: bool):
    def fn(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
        assert inputs.base is not None
        epsilon = float(cast(float, params["epsilon"]))
        if not plus:
            return ram_merge(inputs.base, inputs.deltas, epsilon=epsilon)
        return ram_merge(inputs.base, inputs.deltas, epsilon=epsilon, r=float(cast(float, params["r"])),
                         alpha=float(cast(float, params["alpha"])))

    return fn


# The entry points evomerge.merge.catalog names for this module's methods.
_ram_mean = _ram(False)
_ramplus_tl = _ram(True)
