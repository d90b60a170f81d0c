"""LiNeS, layer-increasing network scaling (Wang et al., arXiv 2410.17146).

A merged task vector is scaled per layer, little in shallow layers (which
hold general features the base already has) and more in deep ones, to
reduce forgetting and interference: λ(ℓ) = α + β·ℓ/(L − 1).

Indexing: the paper writes λ(ℓ) = α + β·(ℓ − 1)/(L − 1) for blocks ℓ = 1..L;
its public code (``LiNeS_scaling``) uses the 0-based block index,
α + β·layer/(num_blocks − 1), and scales every tensor outside the residual
blocks (embeddings, final norm, head) by α. We take the 0-based index, which
is the index in Hugging Face names (``model.layers.{i}``): the first block
gets α, the last α + β. Tensors outside the blocks should use α (the
materializer's choice to make; ``lines_factor(0, ...)`` gives it).
"""

from __future__ import annotations

import math

from evomerge.errors import MergeError


def lines_factor(layer_index: int, num_layers: int, alpha: float, beta: float) -> float:
    """Scale of layer ``layer_index``'s (0-based) task vector among ``num_layers`` blocks."""
    if num_layers < 1:
        raise MergeError(f"LiNeS: num_layers must be at least 1, got {num_layers}")
    if not 0 <= layer_index < num_layers:
        raise MergeError(f"LiNeS: layer_index {layer_index} is outside 0..{num_layers - 1}")
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise MergeError(f"LiNeS: alpha and beta must be finite, got alpha={alpha}, beta={beta}")
    if num_layers == 1:
        return float(alpha)
    return float(alpha + beta * (layer_index / (num_layers - 1)))
