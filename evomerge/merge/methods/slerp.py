"""Spherical linear interpolation of two models (Shoemake 1985; mergekit's ``slerp``).

No arXiv paper: the method is the classic quaternion slerp applied to each
flattened tensor, as popularised by mergekit. mergekit facts kept here: the
first endpoint (``t = 0``) is mergekit's ``base_model``, so ``sources[0]``
must be the model that is named base in an exported YAML; the angle comes
from the two tensors normalised by their L2 norms (a norm ≤ 1e-8 is left
unnormalised); when |cos| > 0.9995 (colinear or anti-colinear) it falls back
to linear interpolation (1 − t)·v0 + t·v1. mergekit accepts any t; we bound
t to [0, 1] (interpolation, not extrapolation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dot_threshold: float = DOT_THRESHOLD,
          eps: float = NORM_EPS) -> torch.Tensor:
    """Interpolate along the great circle from ``v0`` (t = 0) to ``v1`` (t = 1); a new tensor."""
    n0 = float(torch.linalg.vector_norm(v0))
    n1 = float(torch.linalg.vector_norm(v1))
    dot = float(torch.dot(v0.reshape(-1), v1.reshape(-1)))
    dot /= (n0 if n0 > eps else 1.0) * (n1 if n1 > eps else 1.0)
    if abs(dot) > dot_threshold:
        s0, s1 = 1.0 - t, t
    else:
        theta = math.acos(max(-1.0, min(1.0, dot)))
        sin_theta = math.sin(theta)
        s0 = math.sin(theta - theta * t) / sin_theta
        s1 = math.sin(theta * t) / sin_theta
    out = v0 * s0
    return out.add_(v1, alpha=s1)


def _slerp(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
    first, second = inputs.sources
    return slerp(float(cast(float, params["t"])), first, second)
