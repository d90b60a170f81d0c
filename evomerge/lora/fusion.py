"""Evo-Merging's LoRA fusion (Chen et al., arXiv 2509.12951), as pure functions on tensors.

Per adapter i: α_i is the keep-fraction of LoRA-A's entries by magnitude and
β_i ∈ [−1.5, 1.5] a signed weight. The fused factors are

    A = Σ_i β_i · topk(A_i, α_i),    B = Σ_i β_i · B_i,

and the update on the base weight is ``scaling · B · A``. Two properties set it
apart from a task-arithmetic sum of the adapters' updates Σ_i β_i B_i A_i:

* it stays a rank-r LoRA (a fused adapter is exported as one PEFT folder), and
  B·A holds the cross terms β_i β_j B_i A_j; this is LoraHub's composition
  (Huang et al., arXiv 2307.13269, ``get_final_weights``: every LoRA tensor is
  the β-weighted sum), which Evo-Merging builds on;
* sparsification is asymmetric: only A is pruned, B never. A projects the
  input onto the adapter's r directions; dropping its small entries removes
  input directions the task barely uses (the paper's denoising), while B,
  which writes the update into the output space, is kept whole.

topk is per matrix (each module's A_i keeps its own top α_i fraction), with
TIES's convention (arXiv 2306.01708; ``evomerge.merge.methods.sparsify``):
k = ⌊α·numel⌋ entries, ties broken by position, no rescaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.errors import MergeError
from evomerge.merge.methods.sparsify import magnitude_prune


def topk_a(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """LoRA-A with only its ⌊α·numel⌋ largest-magnitude entries kept (α ≥ 1: A itself, α ≤ 0: zeros)."""
    if not 0.0 <= alpha <= 1.0:
        raise MergeError(f"keep-fraction alpha must lie in [0, 1], got {alpha}")
    return magnitude_prune(a, alpha)


def fuse_pair(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], alpha: Sequence[float],
              beta: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) = (Σ β_i·topk(A_i, α_i), Σ β_i·B_i) for one module; B is never sparsified."""
    n = len(a)
    if not (len(b) == len(alpha) == len(beta) == n) or n == 0:
        raise MergeError(f"fuse_pair: {len(a)} A, {len(b)} B, {len(alpha)} alpha, {len(beta)} beta; need one "
                         "of each per adapter")
    fused_a = sum(float(w) * topk_a(x, float(k)) for x, k, w in zip(a, alpha, beta, strict=True))
    fused_b = sum(float(w) * y for y, w in zip(b, beta, strict=True))
    assert isinstance(fused_a, torch.Tensor) and isinstance(fused_b, torch.Tensor)
    return fused_a, fused_b


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """The weight update of one LoRA pair, ``(B @ A) * scaling``: PEFT's order, so merges agree bit for bit."""
    return (b @ a) * scaling


def apply_delta(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W = W0 + scaling·B·A (computed as PEFT's merge does: ``W0 + (B @ A) * scaling``)."""
    return w0 + lora_delta(a, b, scaling).to(w0.dtype)
