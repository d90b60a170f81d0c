"""Karcher mean: the Riemannian (Fréchet) mean of the models on the unit sphere (mergekit's ``karcher``).

Each tensor is split into its norm and its direction; the directions' weighted
Karcher mean is found by fixed-point iteration (log map, average, exp map) and
scaled by the weighted mean of the norms. mergekit cites arXiv 2603.04972.

mergekit facts kept: every model counts equally (no weight parameter); the
base model, when set, is one of the averaged models (mergekit ignores base
roles here); a tensor with norm ≤ ``tol`` takes no part in the direction (it
still counts in the norm); the start is the normalised weighted mean of the
directions (the first direction when that is shorter than ``tol``); a step
stops after ``max_iter`` iterations (default 10) or when the tangent's norm
is below ``tol`` (default 1e-5); directions within ``tol`` radians of the
mean add nothing to the tangent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch

from evomerge.merge.base import MergeInputs


def karcher_mean(tensors: Sequence[torch.Tensor], alphas: Sequence[float], *, max_iter: int = 10,
                 tol: float = 1e-5) -> torch.Tensor:
    """Σα·‖x‖ times the weighted Karcher mean of the directions x/‖x‖; a new tensor."""
    if len(tensors) == 1:
        return tensors[0].clone()
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    units = [tensors[i] / norms[i] for i in valid]
    alpha_sum = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_sum for i in valid]
    mean = torch.zeros_like(units[0])
    for w, u in zip(weights, units, strict=True):
        mean += w * u
    mean_norm = torch.linalg.vector_norm(mean)
    mean = units[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for w, u in zip(weights, units, strict=True):
            dot = torch.clamp(torch.dot(mean.reshape(-1), u.reshape(-1)), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += w * (theta / torch.sin(theta)) * (u - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if float(tangent_norm) < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    scale = sum(a * n for a, n in zip(alphas, norms, strict=True))
    return scale * mean


def _karcher(inputs: MergeInputs, params: Mapping[str, object],
             generator: torch.Generator | None) -> torch.Tensor:
    tensors = inputs.sources
    alphas = [1.0 / len(tensors)] * len(tensors)
    return karcher_mean(tensors, alphas, max_iter=int(cast(int, params["max_iter"])),
                        tol=float(cast(float, params["tol"])))
