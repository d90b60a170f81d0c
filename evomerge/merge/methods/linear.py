"""Linear merge, "model soups" (Wortsman et al., arXiv 2203.05482): Σ_k w_k·θ_k.

Weight-space, needs no base. With ``normalize`` (default true, as in mergekit)
the sum is divided by Σ_k w_k. mergekit divides even when the weights sum to
zero (giving inf/NaN weights); we raise a MergeError instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from evomerge.errors import MergeError
from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of

_ZERO_WEIGHT_SUM = 1e-8


def linear_combination(tensors: Sequence[torch.Tensor], weights: Sequence[float], *,
                       normalize: bool, name: str = "?") -> torch.Tensor:
    """Σ_k w_k·x_k, divided by Σ_k w_k when ``normalize``; a new tensor."""
    out = tensors[0] * weights[0]
    for x, w in zip(tensors[1:], weights[1:], strict=True):
        out.add_(x, alpha=w)
    if normalize:
        total = float(sum(weights))
        if abs(total) < _ZERO_WEIGHT_SUM:
            raise MergeError(f"tensor '{name}': linear merge with normalize needs weights that do not sum "
                             f"to zero (got {list(weights)}); change a weight or set normalize: false")
        out.div_(total)
    return out


def _linear(inputs: MergeInputs, params: Mapping[str, object],
            generator: torch.Generator | None) -> torch.Tensor:
    return linear_combination(inputs.sources, weights_of(params),
                              normalize=bool(params["normalize"]), name=inputs.name)
