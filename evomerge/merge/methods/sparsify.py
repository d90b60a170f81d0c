"""Sparsification of task vectors: magnitude top-k (TIES), random drop (DARE),
outlier-and-small drop (Model Breadcrumbs) and rank-graded random drop (DELLA).

Every function is pure: it never writes into its input (the resident task
vectors of a search worker are shared between candidates) and returns either
the input itself (density 1: nothing to drop, as in mergekit) or a new tensor.

Selection is done without sorting the whole tensor and without
``torch.quantile`` (which refuses inputs over 16M elements): the k-th
largest magnitude is found as a threshold (``torch.kthvalue`` on the CPU,
about twice as fast there; on accelerators an unsorted ``torch.topk`` of the
smaller side, since CUDA's ``kthvalue`` runs one block per slice while
``topk`` splits large slices over many; both give the same value), and ties at
the threshold are broken by position (lowest flat index first), so exactly
``k`` entries are kept and the mask is the same on every device. mergekit
breaks such ties by an unstable argsort: the kept *count* is the same, only
which of several equal-magnitude entries survives may differ (bf16 task
vectors do have such ties).

Rescaling: mergekit (since PR #245, April 2024) rescales a sparsified task
vector so that its L1 norm equals the norm before dropping (``rescale_norm:
l1``), for DARE and DELLA alike; the papers rescale each kept entry by the
inverse of its keep probability (DARE 1/density, arXiv 2311.03099; DELLA
1/(1-p_i), arXiv 2406.11617). ``Rescale`` selects either; the registered
methods use mergekit's "l1" so that an exported mergekit YAML reproduces them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from evomerge.errors import MergeError

Rescale = Literal["l1", "inverse_keep_prob"] | None

# Norms below this are treated as zero when rescaling (mergekit's eps).
_L1_EPS = 1e-7


def kept_count(numel: int, density: float) -> int:
    """Entries kept at ``density``: ``int(density * numel)``, mergekit's floor."""
    return int(density * numel)


# Above this size the CPU selection brackets the answer from a sample first (see _kth_largest_bracketed).
_BRACKET_MIN_NUMEL = 1 << 18
_SAMPLE = 1 << 16


def kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of a 1-D tensor (1 <= k <= n), exactly."""
    n = flat.numel()
    if flat.device.type == "cpu":
        if n >= _BRACKET_MIN_NUMEL:
            found = _kth_largest_bracketed(flat, k)
            if found is not None:
                return found
        return torch.kthvalue(flat, n - k + 1).values
    if k <= n - k + 1:
        return torch.topk(flat, k, largest=True, sorted=False).values.min()
    return torch.topk(flat, n - k + 1, largest=False, sorted=False).values.max()


def _kth_largest_bracketed(flat: torch.Tensor, k: int) -> torch.Tensor | None:
    """Exact k-th largest by sample-bracketing (Floyd–Rivest style), or None when the bracket missed.

    ``torch.kthvalue`` is a single-threaded selection over the whole tensor. A
    strided sample of 65,536 values gives two bounds that very likely enclose the
    answer; counting the values above the upper bound and selecting inside the
    band between the bounds are cheap, multi-threaded passes, and the final
    ``kthvalue`` runs on the band only (typically ~1 % of the tensor). The result
    is exact whatever the sample: the answer is in the band exactly when the
    counts say so, and otherwise the caller falls back to a full selection.
    """
    lo, hi, _, _ = _sample_bounds(flat, k)
    above = int(torch.count_nonzero(flat > hi))  # count_nonzero: ~10x faster than a bool sum on CPU
    if above >= k:
        return None
    band = flat[(flat >= lo) & (flat <= hi)]
    need = k - above
    if need > band.numel():
        return None
    return torch.kthvalue(band, band.numel() - need + 1).values


def top_k_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``magnitude`` (any shape).

    Ties at the k-th value are broken by flat position, lowest first, so the
    mask has exactly ``k`` true entries and masks for growing ``k`` are nested.
    """
    flat = magnitude.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    if flat.device.type == "cpu" and n >= _BRACKET_MIN_NUMEL:
        mask = _top_k_mask_bracketed(flat, k)
        if mask is not None:
            return mask.view(magnitude.shape)
    threshold = kth_largest(flat, k)
    mask = flat > threshold
    missing = k - int(torch.count_nonzero(mask))
    if missing > 0:
        at_threshold = flat == threshold
        count_dtype = torch.int32 if n < 2**31 else torch.int64
        first = at_threshold.cumsum(0, dtype=count_dtype) <= missing
        mask |= at_threshold & first
    return mask.view(magnitude.shape)


# A one-sided selection (see _top_k_mask_bracketed) is used when the side it gathers is at most this fraction.
_ONE_SIDED_MAX_FRACTION = 1 / 8


def _sample_bounds(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Bounds ``lo <= hi`` that very likely enclose the k-th largest value, from a strided sample.

    Also the sample's estimates of the fractions of entries ``>= lo`` and ``<= hi``.
    """
    n = flat.numel()
    stride = max(n // _SAMPLE, 1)
    sample = flat[::stride].contiguous()
    m = sample.numel()
    q = k / n
    j = int(q * m)
    margin = int(4 * math.sqrt(m * q * (1 - q))) + 16
    # the (j - margin)-th and (j + margin)-th largest of the sample (0-based): two selections beat one sort
    upper = max(j - margin, 0)
    lower = min(j + margin, m - 1)
    hi = torch.kthvalue(sample, m - upper).values
    lo = torch.kthvalue(sample, m - lower).values
    return lo, hi, (lower + 1) / m, (m - upper) / m


def _top_k_mask_bracketed(flat: torch.Tensor, k: int) -> torch.Tensor | None:
    """The mask of ``top_k_mask`` for a large 1-D CPU tensor in a few passes, or None when the sample missed.

    Same selection as the generic path (threshold t = the k-th largest value, every
    entry above t, then the first entries equal to t by position), found from a
    sample's bounds ``lo <= t <= hi`` (see ``_kth_largest_bracketed``): only the
    entries between the bounds are gathered (by position, ascending) and selected
    among, and the mask is built from one comparison plus index writes. When the
    top (or the bottom) side is small, the entries ``>= lo`` (or ``<= hi``) are
    gathered instead, one comparison fewer. Exact whatever the sample: a bound that
    does not enclose t is detected by the counts and answered with None.
    """
    n = flat.numel()
    lo, hi, frac_ge_lo, frac_le_hi = _sample_bounds(flat, k)
    if frac_ge_lo <= _ONE_SIDED_MAX_FRACTION:  # few large entries: select among those >= lo
        mask = flat >= lo
        idx = mask.nonzero().squeeze(1)
        vals = flat[idx]
        if vals.numel() < k:  # t < lo
            return None
        t = torch.kthvalue(vals, vals.numel() - k + 1).values
        at_or_below = vals <= t
        mask[idx[at_or_below]] = False
        need = k - (vals.numel() - int(torch.count_nonzero(at_or_below)))
    elif frac_le_hi <= _ONE_SIDED_MAX_FRACTION:  # few small entries: select among those <= hi
        below = flat <= hi
        idx = below.nonzero().squeeze(1)
        vals = flat[idx]
        rank = n - k + 1  # t is the rank-th smallest
        if vals.numel() < rank:  # t > hi
            return None
        t = torch.kthvalue(vals, rank).values
        mask = below.logical_not_()
        above = vals > t
        mask[idx[above]] = True
        need = k - (n - vals.numel()) - int(torch.count_nonzero(above))
    else:
        mask = flat > hi
        n_above_hi = int(torch.count_nonzero(mask))
        if n_above_hi >= k:  # t > hi
            return None
        band = flat >= lo
        band ^= mask  # lo <= x <= hi (every x > hi is >= lo)
        idx = band.nonzero().squeeze(1)
        vals = flat[idx]
        need = k - n_above_hi
        if need > vals.numel():  # t < lo
            return None
        t = torch.kthvalue(vals, vals.numel() - need + 1).values
        above = vals > t
        mask[idx[above]] = True
        need -= int(torch.count_nonzero(above))
    if need > 0:  # ties at t, lowest positions first (idx is ascending)
        mask[idx[vals == t][:need]] = True
    return mask


def top_k_positions(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Flat positions (int64, in no particular order) of the entries ``top_k_mask`` keeps.

    For a small ``k`` on a large CPU tensor only the entries above a sample's bound
    are gathered and selected among, with no full-size mask.
    """
    flat = magnitude.reshape(-1)
    n = flat.numel()
    if 0 < k < n and flat.device.type == "cpu" and n >= _BRACKET_MIN_NUMEL:
        lo, _, frac_ge_lo, _ = _sample_bounds(flat, k)
        if frac_ge_lo <= _ONE_SIDED_MAX_FRACTION:
            idx = (flat >= lo).nonzero().squeeze(1)
            vals = flat[idx]
            if vals.numel() >= k:  # else t < lo: the generic path below
                t = torch.kthvalue(vals, vals.numel() - k + 1).values
                above = vals > t
                need = k - int(torch.count_nonzero(above))
                return torch.cat([idx[above], idx[vals == t][:need]])
    return top_k_mask(flat, k).nonzero().squeeze(1)


class SourceNorm:
    """The source-only part every L1 rescale needs: a resident task vector's L1 norm, summed once.

    The base of the per-task-vector tables below (``MagnitudeOrder``, ``RowRanks``); alone it is what
    DARE keeps (its drop masks are random per candidate, only the norm before dropping is not).
    ``l1`` is ``l1_norm(delta)`` exactly, computed on first use and kept.
    """

    def __init__(self, delta: torch.Tensor) -> None:
        self.numel = delta.numel()
        self._l1: float | None = None

    @staticmethod
    def planned_nbytes(shape: tuple[int, ...]) -> int:
        """Bytes the table takes for a task vector of ``shape`` (what a memory budget must hold)."""
        return 0

    @property
    def nbytes(self) -> int:
        return 0

    def l1(self, delta: torch.Tensor) -> float:
        """``l1_norm(delta)`` for the task vector this table was built from, summed once."""
        self.check(delta)
        if self._l1 is None:
            self._l1 = l1_norm(delta)
        return self._l1

    def check(self, delta: torch.Tensor) -> None:
        if delta.numel() != self.numel:
            raise MergeError(f"a precomputed table of {self.numel} entries was given a task vector of "
                             f"{delta.numel()}: it belongs to another tensor")


class MagnitudeOrder(SourceNorm):
    """The source-only part of a magnitude top-k, computed once per resident task vector.

    A search merges the same task vectors with thousands of densities. Each entry's
    |value| is bucketed once by its float32 bit pattern (which orders like the value):
    exponent and top 4 mantissa bits, so 256 buckets of 1/16 octave each cover the 16
    octaves below the largest magnitude (anything smaller shares bucket 0). Equal
    values share a bucket and larger values never sit in a lower one. A top-k then
    needs no pass over the float32 magnitudes: the bucket holding the k-th largest
    value follows from the bucket sizes, every entry of a higher bucket is kept (one
    uint8 comparison), and only the entries of that bucket are selected among. The
    mask is ``top_k_mask``'s exactly (same threshold, ties at it by position).
    Costs one byte per entry. Used by TIES (top-k) and Model Breadcrumbs (a band of ranks).
    """

    def __init__(self, delta: torch.Tensor) -> None:
        super().__init__(delta)
        flat = delta.reshape(-1).to(torch.float32).contiguous()  # the bit trick needs float32
        code = flat.view(torch.int32).bitwise_and(0x7FFFFFFF).bitwise_right_shift_(19)  # |x|'s 12 top bits
        top = int(code.max()) if self.numel else 0
        self.bucket = code.sub_(top - 255).clamp_(0, 255).to(torch.uint8)
        del code
        counts = torch.bincount(self.bucket, minlength=256).tolist()
        # above[b]: entries in buckets higher than b
        self._above = [0] * len(counts)
        total = 0
        for b in range(len(counts) - 1, -1, -1):
            self._above[b] = total
            total += counts[b]
        self._counts = counts

    @staticmethod
    def planned_nbytes(shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    @property
    def nbytes(self) -> int:
        return self.bucket.numel()

    def top_k_mask(self, delta: torch.Tensor, k: int) -> torch.Tensor:
        """``top_k_mask(delta.abs(), k)`` for the task vector this order was built from."""
        self.check(delta)
        n = self.numel
        if k >= n:
            return torch.ones(delta.shape, dtype=torch.bool, device=delta.device)
        if k <= 0:
            return torch.zeros(delta.shape, dtype=torch.bool, device=delta.device)
        j = next(b for b in range(len(self._counts)) if self._above[b] < k <= self._above[b] + self._counts[b])
        mask = self.bucket > j
        idx = (self.bucket == j).nonzero().squeeze(1)  # ascending positions
        vals = delta.reshape(-1)[idx].abs_()
        need = k - self._above[j]
        t = torch.kthvalue(vals, vals.numel() - need + 1).values
        above = vals > t
        mask[idx[above]] = True
        need -= int(torch.count_nonzero(above))
        if need > 0:  # ties at t, lowest positions first
            mask[idx[vals == t][:need]] = True
        return mask.view(delta.shape)

    def band_mask(self, delta: torch.Tensor, n_bottom: int, n_top: int) -> torch.Tensor:
        """``rank_band_mask(delta.abs(), n_bottom, n_top)``: the top ``n - n_bottom`` without the top ``n_top``."""
        keep = self.top_k_mask(delta, self.numel - n_bottom)
        if n_top > 0:
            keep &= self.top_k_mask(delta, n_top).logical_not_()
        return keep


class RowRanks(SourceNorm):
    """DELLA's source-only part: each entry's magnitude rank within its row, computed once per task vector.

    A keep probability is a linear function of the rank (``della_keep_probabilities``), so a new
    (density, epsilon) costs a widening and two arithmetic passes instead of a sort of every row.
    Ranks are ``della_keep_probabilities``' (along dim 1, 1-D tensors one row, ties by position) and the
    probabilities are computed from them with the same float32 operations, so they are equal bit for
    bit. Two bytes per entry (four for rows over 32,768 entries).
    """

    def __init__(self, delta: torch.Tensor) -> None:
        super().__init__(delta)
        self.shape = delta.shape
        rows = delta.reshape(1, -1) if delta.dim() < 2 else delta
        self.n = rows.shape[1]
        self.ranks: torch.Tensor | None = None
        if self.n < 2:
            return
        if rows.dim() == 2 and rows.device.type == "cpu" and rows.dtype == torch.float32 and self.n < 2**31:
            order = _row_order_by_magnitude(rows)
        else:
            order = torch.sort(rows.abs(), dim=1, stable=True).indices
        along_dim1 = [1] * rows.dim()
        along_dim1[1] = self.n
        positions = torch.arange(self.n, device=delta.device).view(along_dim1).expand_as(order)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, positions)
        del order
        self.ranks = ranks.to(self._rank_dtype(self.n))

    @staticmethod
    def _rank_dtype(n: int) -> torch.dtype:
        return torch.int16 if n <= 2**15 else torch.int32

    @staticmethod
    def planned_nbytes(shape: tuple[int, ...]) -> int:
        n = math.prod(shape) if len(shape) < 2 else shape[1]
        return 0 if n < 2 else math.prod(shape) * RowRanks._rank_dtype(n).itemsize

    @property
    def nbytes(self) -> int:
        return 0 if self.ranks is None else self.ranks.numel() * self.ranks.element_size()

    def check(self, delta: torch.Tensor) -> None:
        """Ranks are per row: the shape must be the one they were built for, not only the size."""
        if delta.shape != self.shape:
            raise MergeError(f"row ranks built for a tensor of shape {tuple(self.shape)} were given one of shape "
                             f"{tuple(delta.shape)}: they belong to another tensor")

    def keep_probabilities(self, delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
        """``della_keep_probabilities(delta, density, epsilon)`` for the task vector these ranks were built from."""
        self.check(delta)
        if self.ranks is None:
            return torch.full(delta.shape, density, dtype=torch.float32, device=delta.device)
        keep = self.ranks.to(torch.float32)
        keep.mul_(2.0 * epsilon / (self.n - 1)).add_(density - epsilon)
        return keep.view(delta.shape)


def rank_band_mask(magnitude: torch.Tensor, n_bottom: int, n_top: int) -> torch.Tensor:
    """Mask keeping the entries ranked between the ``n_bottom`` smallest and the ``n_top`` largest.

    That is ``top_k_mask(n - n_bottom) & ~top_k_mask(n_top)``; the top set is
    cleared by position (it is small: breadcrumbs' gamma is about 1 %).
    """
    n = magnitude.numel()
    keep = top_k_mask(magnitude, n - n_bottom)
    if n_top > 0:
        keep.view(-1)[top_k_positions(magnitude, n_top)] = False
    return keep


def _times_mask(delta: torch.Tensor, mask: torch.Tensor, *, into: torch.Tensor | None = None) -> torch.Tensor:
    """``delta * mask`` (``mask`` boolean), written into ``into`` when given (a scratch tensor of delta's shape
    and dtype, e.g. its magnitudes once the mask is chosen: a full-size allocation fewer).

    The mask is widened to 1.0/0.0 in the output and multiplied by ``delta`` in place: the same values as the
    float-by-bool product (a bool multiplies as 1.0/0.0, -0.0 included, and IEEE products commute), about 2.5x
    faster on the CPU, where a float-by-bool product runs unvectorised.
    """
    if into is None or into.dtype != delta.dtype or into.shape != delta.shape or not into.is_contiguous():
        into = torch.empty_like(delta, memory_format=torch.contiguous_format)
    return into.copy_(mask).mul_(delta)


_L1_ROW = 256


def l1_norm(tensor: torch.Tensor) -> float:
    """Sum of |x|, accurate to ~1e-9 relative on every device.

    ``vector_norm(ord=1)`` in float32 on the CPU accumulates long runs in float32
    (0.6% off on a 20M-entry tensor, and thus far from the CUDA result); here
    rows of 256 entries are summed in float32 and the row sums in float64, at
    the same cost. CPU and CUDA then agree to ~1e-9 relative, so the float32
    rescale factor they apply is the same but for rare rounding ties.
    """
    flat = tensor.reshape(-1)
    n_main = flat.numel() // _L1_ROW * _L1_ROW
    total = 0.0
    if n_main:
        rows = torch.linalg.vector_norm(flat[:n_main].view(-1, _L1_ROW), ord=1, dim=1)
        total += float(rows.sum(dtype=torch.float64))
    if n_main < flat.numel():
        total += float(flat[n_main:].abs().sum(dtype=torch.float64))
    return total


def rescale_l1(original: torch.Tensor, masked: torch.Tensor, table: SourceNorm | None = None) -> torch.Tensor:
    """Scale ``masked`` (in place; it must be a fresh tensor) to the L1 norm of ``original``.

    mergekit's ``rescaled_masked_tensor(..., RescaleNorm.l1)``: skipped when either
    norm is below 1e-7. ``table``: ``original``'s precomputed table, which keeps its norm.
    """
    before = table.l1(original) if table is not None else l1_norm(original)
    after = l1_norm(masked)
    if before < _L1_EPS or after < _L1_EPS:
        return masked
    return masked.mul_(before / after)


def magnitude_prune(delta: torch.Tensor, density: float, rescale: Rescale = None,
                    order: MagnitudeOrder | None = None) -> torch.Tensor:
    """TIES trim (arXiv 2306.01708): keep the top ``density`` fraction of entries by |value|.

    ``rescale="l1"`` is mergekit's optional ``rescale: true`` for ties (off by default).
    ``order``: ``delta``'s precomputed ``MagnitudeOrder`` (a resident task vector's): same mask, fewer passes.
    """
    if density >= 1:
        return delta
    if isinstance(order, MagnitudeOrder):
        out = _times_mask(delta, order.top_k_mask(delta, kept_count(delta.numel(), density)))
    else:
        magnitude = delta.abs()
        mask = top_k_mask(magnitude, kept_count(delta.numel(), density))
        out = _times_mask(delta, mask, into=magnitude)
    if rescale == "l1":
        rescale_l1(delta, out, order)
    elif rescale == "inverse_keep_prob":
        raise MergeError("magnitude pruning is deterministic; rescale by keep probability is undefined")
    return out


def magnitude_outliers(
    delta: torch.Tensor, density: float, gamma: float, rescale: Rescale = None,
    order: MagnitudeOrder | None = None,
) -> torch.Tensor:
    """Model Breadcrumbs (arXiv 2312.06795): drop the largest ``gamma`` fraction and the
    smallest entries, so that a ``density`` fraction remains.

    Counts follow mergekit: ``n_top = int(gamma*n)``, ``n_keep = int(density*n)``,
    ``n_bottom = n - n_keep - n_top``; when that is negative the top cut shrinks
    (density wins over gamma). Density 1 returns the input untouched (gamma is
    then ignored, as in mergekit). When ``n_top`` is 0 (gamma = 0 or a tensor
    with fewer than 1/gamma entries) the band keeps the top ``n_keep`` entries,
    as mergekit 0.1.5 does (``indices[n_bot:n_bot + n_keep]``; its earlier
    ``indices[n_bot:-n_top]`` kept nothing there). ``order``: ``delta``'s precomputed
    ``MagnitudeOrder`` (a resident task vector's): the same band from uint8 comparisons.
    """
    if density >= 1:
        return delta
    n = delta.numel()
    n_keep = kept_count(n, density)
    n_top = int(gamma * n)
    n_bottom = n - n_keep - n_top
    if n_bottom < 0:
        n_top += n_bottom
        n_bottom = 0
    if isinstance(order, MagnitudeOrder):
        out = _times_mask(delta, order.band_mask(delta, n_bottom, n_top))
    else:
        magnitude = delta.abs()
        out = _times_mask(delta, rank_band_mask(magnitude, n_bottom, n_top), into=magnitude)
    if rescale == "l1":
        rescale_l1(delta, out, order)
    elif rescale == "inverse_keep_prob":
        raise MergeError("breadcrumbs is deterministic; rescale by keep probability is undefined")
    return out


def uniform_like(delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U[0, 1) noise shaped like ``delta``, drawn only from ``generator``, on ``delta``'s device.

    Drawn on the generator's device (the CPU, see ``MergeMethod.__call__``) and
    moved: CUDA's generator is another algorithm (Philox) and would give a GPU
    search other masks than the CPU export of the same recipe.
    """
    noise = torch.rand(delta.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise if noise.device == delta.device else noise.to(delta.device, non_blocking=True)


def random_drop(
    delta: torch.Tensor, density: float, generator: torch.Generator, rescale: Rescale = "l1",
    table: SourceNorm | None = None,
) -> torch.Tensor:
    """DARE (arXiv 2311.03099): keep each entry with probability ``density``, drop it otherwise.

    The paper rescales kept entries by 1/density (``"inverse_keep_prob"``);
    mergekit's ``rescale: true`` matches the L1 norm instead (``"l1"``).
    Density 1 returns the input untouched and draws nothing. ``table``: ``delta``'s precomputed
    table (a resident task vector's), whose kept L1 norm spares a pass per candidate.
    """
    if density >= 1:
        return delta
    keep = uniform_like(delta, generator).lt_(density)  # 1.0 where kept, 0.0 where dropped
    out = torch.mul(delta, keep, out=keep)
    if rescale == "l1":
        rescale_l1(delta, out, table)
    elif rescale == "inverse_keep_prob":
        out.mul_(1.0 / density)
    return out


def della_keep_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep probabilities (arXiv 2406.11617), mergekit's layout.

    Entries are ranked by |value| along dim 1 (1-D tensors are one row, as in
    mergekit) and the keep probability rises linearly with rank from
    ``density - epsilon`` (smallest) to ``density + epsilon`` (largest); the drop
    probability p_i = 1 - keep_i is thus spread ±epsilon around 1 - density.
    Ties in magnitude are ranked by position (stable sort). A row of one entry
    gets ``density`` (mergekit divides 0 by 0 there and fails).
    """
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta
    n = rows.shape[1]
    if n < 2:
        return torch.full(delta.shape, density, dtype=torch.float32, device=delta.device)
    if rows.dim() == 2 and rows.device.type == "cpu" and rows.dtype == torch.float32 and n < 2**31:
        order = _row_order_by_magnitude(rows)
        # rank r gets keep probability r·2ε/(n−1) + density − ε, computed exactly as below, then lands at
        # the entry ranked r: keep[i, order[i, r]] = prob[r]
        prob = torch.arange(n, dtype=torch.int64).to(torch.float32)
        prob.mul_(2.0 * epsilon / (n - 1)).add_(density - epsilon)
        keep = torch.empty(rows.shape, dtype=torch.float32)
        keep.scatter_(1, order, prob.expand(rows.shape))
        return keep.view(delta.shape)
    order = torch.sort(rows.abs(), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    along_dim1 = [1] * rows.dim()
    along_dim1[1] = n
    positions = torch.arange(n, device=delta.device).view(along_dim1).expand_as(order)
    ranks.scatter_(1, order, positions)
    del order, positions
    keep = ranks.to(torch.float32)
    del ranks
    keep.mul_(2.0 * epsilon / (n - 1)).add_(density - epsilon)
    return keep.view(delta.shape)


def _row_order_by_magnitude(rows: torch.Tensor) -> torch.Tensor:
    """``torch.sort(rows.abs(), dim=1, stable=True).indices`` for a float32 CPU matrix, several times faster.

    The bit pattern of a non-negative float32, read as an integer, orders like the
    float (subnormals and inf included), so the int64 key ``bits(|x|) << 32 |
    column`` orders each row by magnitude with ties by position, exactly the
    stable sort's order; keys are unique, so any sort gives that order. The key
    is built in place (little-endian: the high half holds |x|, the low half the
    column), numpy sorts int64 rows in place with SIMD (x86-simd-sort) and
    without the GIL, about 7x faster than torch's stable sort along a dimension,
    and the low half is the index wanted. (NaN magnitudes may order differently
    among themselves; the merge then fails on its non-finite result anyway.)
    """
    n_rows, n = rows.shape
    key = torch.empty((n_rows, n), dtype=torch.int64)
    halves = key.view(torch.int32).view(n_rows, n, 2)
    torch.abs(rows, out=halves[:, :, 1].view(torch.float32))
    halves[:, :, 0].copy_(torch.arange(n, dtype=torch.int32))
    key.numpy().sort(axis=1)
    return key.bitwise_and_(0xFFFFFFFF)


def check_della_band(density: float, epsilon: float, *, where: str) -> None:
    """DELLA needs density ± epsilon strictly inside (0, 1) (mergekit raises the same)."""
    if density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise MergeError(
            f"{where}: della needs density ± epsilon inside (0, 1), got density {density:g} and "
            f"epsilon {epsilon:g}; choose epsilon < {min(density, 1 - density):g}"
        )


def della_magprune(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator,
    rescale: Rescale = "l1",
    ranks: RowRanks | None = None,
) -> torch.Tensor:
    """DELLA MagPrune (arXiv 2406.11617): random drop with magnitude-ranked probabilities.

    Larger entries are kept more often. The paper rescales each kept entry by
    1/(1 - p_i) (``"inverse_keep_prob"``); mergekit matches the L1 norm
    (``"l1"``). Density 1 returns the input untouched and draws nothing.
    ``ranks``: ``delta``'s precomputed ``RowRanks`` (a resident task vector's): no sort per candidate.
    """
    if density >= 1:
        return delta
    check_della_band(density, epsilon, where="della")
    if isinstance(ranks, RowRanks):
        keep_prob = ranks.keep_probabilities(delta, density, epsilon)
    else:
        keep_prob = della_keep_probabilities(delta, density, epsilon)
    keep = uniform_like(delta, generator).lt_(keep_prob)  # 1.0 where kept, 0.0 where dropped
    out = torch.mul(delta, keep, out=keep)
    if rescale == "l1":
        rescale_l1(delta, out, ranks)
    elif rescale == "inverse_keep_prob":
        out.div_(keep_prob)
    return out


def per_source_generators(generator: torch.Generator, n_sources: int) -> list[torch.Generator]:
    """One independent generator per source, seeded from ``generator`` in source order.

    All sub-seeds are drawn up front, whatever the densities, so source k's drop
    mask depends only on (seed, k, its own parameters): changing another source's
    density (or setting it to 1, which draws nothing) leaves it unchanged, and
    for a fixed seed the kept set only grows with density (common random numbers
    across a search).
    """
    seeds = torch.randint(0, 2**62, (n_sources,), generator=generator, device=generator.device)
    return [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds.tolist()]
