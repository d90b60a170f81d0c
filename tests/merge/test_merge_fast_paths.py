"""The fast selection and ranking paths equal their reference formulas bit for bit.

Large CPU tensors take sample-bracketed selections (TIES, breadcrumbs) and a
packed-key row sort (DELLA); these tests pin them to the plain definitions,
including ties, zeros and samples that miss the answer.
"""

from __future__ import annotations

import pytest
import torch

from evomerge.materialize.execute import BufferPool, gather_from_sources
from evomerge.materialize.plan import TensorRef, TensorTask
from evomerge.merge.methods import sparsify
from evomerge.merge.methods.sparsify import della_keep_probabilities, rank_band_mask, top_k_mask, top_k_positions

N = 300_000  # above the size where the bracketed selection starts


def reference_top_k_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """k largest entries, ties at the k-th value broken by lowest position (a stable descending sort)."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(-flat, stable=True).indices
        mask[order[:k]] = True
    return mask


def reference_della(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta
    n = rows.shape[1]
    order = torch.sort(rows.abs(), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    along_dim1 = [1] * rows.dim()
    along_dim1[1] = n
    ranks.scatter_(1, order, torch.arange(n).view(along_dim1).expand_as(order))
    return ranks.to(torch.float32).mul_(2.0 * epsilon / (n - 1)).add_(density - epsilon).view(delta.shape)


def magnitudes(kind: str, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if kind == "bf16_deltas":  # many exact ties, as in real bf16 task vectors
        a = (torch.randn(n, generator=g) * 0.02).bfloat16().float()
        return (a - (torch.randn(n, generator=g) * 0.02).bfloat16().float()).abs()
    if kind == "few_values":
        return torch.randint(0, 7, (n,), generator=g).float()
    stride = max(n // sparsify._SAMPLE, 1)
    x = torch.zeros(n) if kind == "sample_sees_only_large" else torch.ones(n)
    x[::stride] = 1.0 if kind == "sample_sees_only_large" else 0.0  # the strided sample misleads the bounds
    return x


@pytest.mark.parametrize("kind", ["bf16_deltas", "few_values", "sample_sees_only_large", "sample_sees_only_small"])
@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.05, 0.3, 0.5, 0.91, 0.95, 0.9999])
def test_top_k_mask_fast_path_equals_the_stable_sort_definition(kind: str, fraction: float) -> None:
    x = magnitudes(kind)
    k = int(fraction * x.numel())
    expected = reference_top_k_mask(x, k)
    assert torch.equal(top_k_mask(x, k), expected)
    positions = top_k_positions(x, k)
    assert positions.numel() == k
    assert expected[positions].all()


@pytest.mark.parametrize("kind", ["bf16_deltas", "few_values", "sample_sees_only_large"])
@pytest.mark.parametrize(("density", "gamma"), [(0.9, 0.01), (0.5, 0.1), (0.99, 0.0), (0.95, 0.05)])
def test_rank_band_mask_is_top_keep_minus_top_gamma(kind: str, density: float, gamma: float) -> None:
    x = magnitudes(kind)
    n = x.numel()
    n_top = int(gamma * n)
    n_bottom = max(n - int(density * n) - n_top, 0)
    expected = reference_top_k_mask(x, n - n_bottom) & ~reference_top_k_mask(x, n_top)
    assert torch.equal(rank_band_mask(x.view(-1, 100), n_bottom, n_top).view(-1), expected)


@pytest.mark.parametrize("shape", [(300, 1000), (7, 3), (5,), (2, 2), (64, 1)])
def test_della_keep_probabilities_equal_the_stable_sort_ranks(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(3)
    d = (torch.randn(shape, generator=g) * 0.02).bfloat16().float() - (torch.randn(shape, generator=g) * 0.02)
    flat = d.view(-1)
    flat[::5] = 0.0
    flat[1::7] = -0.0
    flat[2::11] = flat[3::11][: flat[2::11].numel()] if flat.numel() > 3 else flat[2::11]  # equal magnitudes
    flat[4::13] = -flat[4::13]
    if flat.numel() > 20:
        flat[9] = float("inf")
    got = della_keep_probabilities(d, 0.5, 0.1)
    expected = reference_della(d, 0.5, 0.1) if d.shape[-1] > 1 or d.dim() < 2 else torch.full(shape, 0.5)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_della_keep_probabilities_of_a_3d_tensor_rank_along_dim_one() -> None:
    d = torch.randn(3, 50, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(della_keep_probabilities(d, 0.4, 0.2), reference_della(d, 0.4, 0.2))


def test_pooled_gather_gives_the_same_task_vectors_and_reuses_buffers() -> None:
    g = torch.Generator().manual_seed(5)
    weights = {m: (torch.randn(1024, 1100, generator=g) * 0.02).bfloat16() for m in ("base", "a", "b")}
    task = TensorTask(out_name="w", shape=(1024, 1100), method="task_arithmetic", base=TensorRef("base", "w"),
                      sources=(TensorRef("a", "w"), TensorRef("b", "w")), params={}, seed=None, layer=None)

    def fetch(ref: TensorRef) -> torch.Tensor:
        return weights[ref.model].clone()

    pool = BufferPool()
    base, deltas = gather_from_sources(task, fetch, pool)
    assert base is not None
    assert torch.equal(base, weights["base"].float())
    for delta, m in zip(deltas, ("a", "b"), strict=True):
        assert torch.equal(delta.view(torch.int32), (weights[m].float() - weights["base"].float()).view(torch.int32))
    pointers = {t.data_ptr() for t in (base, *deltas)}
    pool.give_back([base, *deltas])
    del base, deltas
    base2, deltas2 = gather_from_sources(task, fetch, pool)
    assert {t.data_ptr() for t in (base2, *deltas2)} == pointers
    assert base2 is not None and torch.equal(base2, weights["base"].float())
