"""Multi-SLERP: a weighted barycentre of N models on the hypersphere (mergekit's ``multislerp``).

No paper (C. Goddard, "multislerp", goddard.blog). The flattened tensors (or,
with a base model, their task vectors) are projected on the unit sphere, their
weighted Euclidean mean gives a tangent point, the weighted tangent vectors are
averaged and mapped back by the exponential map, and the result is scaled to
the weighted mean of the norms.

mergekit facts kept: ``normalize_weights`` (default true) divides the weights
by their sum; ``eps`` (default 1e-8) is added to norms before dividing; one
model is returned unchanged; when the weighted mean of the unit vectors has
norm < eps (antipodal inputs) two models fall back to Σ w_k·x_k and more are an
error (mergekit raises too). Difference: where every task vector is zero (a
tensor no fine-tune changed) mergekit raises that error too; evomerge returns
the base, the only sensible answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.errors import MergeError
from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of


def multislerp(vectors: torch.Tensor, weights: torch.Tensor, *, eps: float, name: str = "?") -> torch.Tensor:
    """Barycentre of the rows of ``vectors`` (n, d) with ``weights`` (n,), already normalised or not."""
    norms = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    units = vectors / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if vectors.shape[0] == 2:
            return vectors[0] * weights[0] + vectors[1] * weights[1]
        raise MergeError(f"tensor '{name}': multislerp's weighted mean of the unit task vectors is zero "
                         "(antipodal inputs whose weights cancel); change a weight")
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdim=True)
    tangent = ((units - dots * mean) * weights.view(-1, 1)).sum(0)
    tangent_norm = torch.linalg.vector_norm(tangent) + eps
    out = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
    return out * (norms.squeeze(-1) * weights).sum()


def _multislerp(inputs: MergeInputs, params: Mapping[str, object],
                generator: torch.Generator | None) -> torch.Tensor:
    with_base = inputs.base is not None
    tensors = inputs.deltas if with_base else inputs.sources
    if len(tensors) == 1:
        return inputs.sources[0].clone()
    if not any(bool(t.any()) for t in tensors):  # every task vector is zero (an untouched tensor): the base
        return torch.zeros_like(tensors[0]).add_(inputs.base) if with_base else torch.zeros_like(tensors[0])
    weights = torch.tensor(weights_of(params), dtype=torch.float32, device=inputs.device)
    if params["normalize_weights"]:
        weights = weights / weights.sum()
    flat = torch.stack([t.reshape(-1) for t in tensors])
    out = multislerp(flat, weights, eps=float(cast(float, params["eps"])), name=inputs.name)
    out = out.view(tensors[0].shape)
    return out.add_(inputs.base) if with_base else out
