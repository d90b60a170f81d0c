"""NearSwap: take the model's value where it is already close to the base (mergekit's ``nearswap``).

No paper (alchemonaut, QuartetAnemoi-70B-t0.0001). Per entry, the weight of
the model is t / |θ₀ − θ₁| clamped to [0, 1] (the difference clamped below at
1e-6): entries that differ by at most t are swapped to the model's value, those
that differ more move toward it by t. θ = w·θ₁ + (1 − w)·θ₀.

mergekit facts kept: exactly a base and one model; ``t`` is required. mergekit
accepts any t; a negative t gives w = 0 (the base), so evomerge asks t ≥ 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs

_DIFF_MIN = 1e-6


def nearswap(t: float, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """θ₀ + w·τ with w = clamp(t / max(|τ|, 1e-6), 0, 1), τ = θ₁ − θ₀: mergekit's w·θ₁ + (1 − w)·θ₀
    written on the task vector (equal up to rounding), so full weights and resident task vectors agree."""
    weight = (t / delta.abs().clamp_(min=_DIFF_MIN)).clamp_(0, 1)
    return weight.mul_(delta).add_(base)


def _nearswap(inputs: MergeInputs, params: Mapping[str, object],
              generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    (delta,) = inputs.deltas
    return nearswap(float(cast(float, params["t"])), inputs.base, delta)
