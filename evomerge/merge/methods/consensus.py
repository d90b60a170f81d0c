"""TIES sign consensus (arXiv 2306.01708): elect a sign per entry, keep agreeing entries,
take their (weight-normalised) disjoint mean.

Facts from mergekit's ``get_mask(method="sum")`` and ``GTATask``, adopted as is:
- the election is on *weighted* (and already sparsified) task vectors: the
  elected sign is + where Σ_k w_k·τ_k >= 0 and − otherwise, so an all-zero or
  exactly cancelling column elects +;
- an entry agrees when sign(w_k·τ_k) equals the elected sign, so a negative
  weight flips which sources agree and an exact zero never agrees;
- the disjoint mean divides by Σ_k w_k over the agreeing entries, and by 1
  where that sum is 0 (no agreeing entry: the merged delta there is 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def elect_sign(weighted: Sequence[torch.Tensor]) -> torch.Tensor:
    """Boolean tensor: True where the elected sign is + (Σ weighted >= 0)."""
    total = torch.zeros_like(weighted[0])
    for w_tau in weighted:
        total.add_(w_tau)
    return total >= 0


def agreement(w_tau: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Boolean tensor: True where ``w_tau`` is nonzero and has the elected sign."""
    # (w_tau > 0) == positive, minus the zeros (which never agree); cheaper than torch.where on CPU
    return ((w_tau > 0) == positive) & (w_tau != 0)


def disjoint_merge(
    weighted: list[torch.Tensor], weights: Sequence[float], *, normalize: bool
) -> torch.Tensor:
    """Σ_k of the agreeing w_k·τ_k, divided (when ``normalize``) by Σ_k w_k over agreeing k.

    ``weighted`` holds this function's own scratch tensors (w_k·τ_k); they are
    overwritten to save memory on 7B-sized tensors. Every pass is in place
    (allocating passes cost several times more on CPU, in page faults): with
    s = ±1 the elected sign, an entry of source k agrees exactly when
    s·w_k·τ_k > 0, so ``clamp(s·w_k·τ_k, min=0)`` is its agreeing magnitude and
    its ``sign`` the agreement indicator. Multiplying by ±1 and negating are
    exact in IEEE arithmetic, so the result equals the textbook formula
    (``agreement`` above) bit for bit, summed in the same order.
    """
    # Σ_k w_k·τ_k without a zero-filled start: only a signed zero can differ, and both zeros elect +
    sign = weighted[0].clone() if len(weighted) == 1 else torch.add(weighted[0], weighted[1])
    for w_tau in weighted[2:]:
        sign.add_(w_tau)
    sign.sign_().add_(0.5).sign_()  # +1 where Σ >= 0 (ties elect +), -1 elsewhere
    merged: torch.Tensor | None = None
    divisor: torch.Tensor | None = None
    for w_tau, w in zip(weighted, weights, strict=True):
        kept = w_tau.mul_(sign).clamp_(min=0)
        if merged is None:
            # the first source's buffers become the sums: 0 + x, exactly (x + 0.0 turns -0.0 into +0.0 as
            # 0 + x does); 0 + w·sign(x) is w·sign(x) but for the sign of a zero, and zeros divide by 1 below
            if normalize:
                divisor = torch.sign(kept).mul_(w)
            merged = kept.add_(0.0)
            continue
        merged.add_(kept)
        if divisor is not None:
            divisor.add_(kept.sign_(), alpha=w)
    assert merged is not None
    merged.mul_(sign)
    if divisor is not None:
        # 1 where no weight agrees (divisor ±0), else unchanged: divisor + (1 - |sign(divisor)|) is exactly
        # masked_fill_(divisor == 0, 1) (x + 0 is x; NaN stays NaN), in vectorised passes, ~2.5x faster on CPU;
        # the last source's buffer is free by now
        scratch = torch.sign(divisor, out=weighted[-1]) if len(weighted) > 1 else torch.sign(divisor)
        divisor.add_(scratch.abs_().neg_().add_(1.0))
        merged.div_(divisor)
    return merged
