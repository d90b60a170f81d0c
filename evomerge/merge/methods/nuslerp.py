"""NuSLERP: slerp with mergekit's newer conventions (mergekit's ``nuslerp``; no paper).

Unlike ``slerp`` it takes a per-model ``weight`` for each of exactly two
models (t = w₂ / (w₁ + w₂), 0.5 when the weights sum to about zero), it can
interpolate row- or column-wise instead of over the flattened tensor, and with
a base model it interpolates the two *task vectors* and adds the result to the
base (the base is the sphere's centre, not an endpoint).

mergekit facts kept: ``nuslerp_flatten`` (default true) treats the tensor as
one vector; otherwise each vector along the last dimension is interpolated on
its own, or along the first with ``nuslerp_row_wise``; vectors are normalised
by their norm clamped at 1e-7; where 1 − cos² ≤ 1e-16 (colinear) the result
is the linear (1 − t)·v₀ + t·v₁.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of

_NORM_MIN = 1e-7
_COLINEAR_EPS = 1e-8
_ZERO_WEIGHT_SUM = 1e-6


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool = False,
            flatten: bool = True) -> torch.Tensor:
    """Spherical interpolation of ``v0`` (t = 0) and ``v1`` (t = 1) per vector along a dimension; a new tensor."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    u0 = v0 / torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp(min=_NORM_MIN)
    u1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp(min=_NORM_MIN)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= _COLINEAR_EPS**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape).contiguous()


def _nuslerp(inputs: MergeInputs, params: Mapping[str, object],
             generator: torch.Generator | None) -> torch.Tensor:
    w0, w1 = weights_of(params)
    total = w0 + w1
    t = 0.5 if abs(total) < _ZERO_WEIGHT_SUM else w1 / total
    row_wise, flatten = bool(params["nuslerp_row_wise"]), bool(params["nuslerp_flatten"])
    if inputs.base is not None:
        d0, d1 = inputs.deltas
        return nuslerp(t, d0, d1, row_wise=row_wise, flatten=flatten).add_(inputs.base)
    s0, s1 = inputs.sources
    return nuslerp(t, s0, s1, row_wise=row_wise, flatten=flatten)
