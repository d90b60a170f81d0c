"""Sparsifiers and the randomised methods (DARE, DELLA): exact facts on small tensors,
statistical and structural facts with a fixed seed."""

from __future__ import annotations

import pytest
import torch

from evomerge.merge import MergeInputs, get_method
from evomerge.merge.methods.sparsify import (
    della_keep_probabilities,
    della_magprune,
    magnitude_outliers,
    magnitude_prune,
    random_drop,
    top_k_mask,
)


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_top_k_mask_keeps_exactly_k_and_breaks_ties_by_position() -> None:
    magnitude = t([3.0, 1.0, 2.0, 2.0, 2.0, 0.0])
    assert top_k_mask(magnitude, 3).tolist() == [True, False, True, True, False, False]
    assert top_k_mask(magnitude, 5).tolist() == [True, True, True, True, True, False]
    assert top_k_mask(magnitude, 0).sum() == 0
    assert top_k_mask(magnitude, 6).all()


def test_top_k_mask_keeps_the_shape_of_a_matrix() -> None:
    mask = top_k_mask(t([[1.0, 5.0], [4.0, 2.0]]), 2)
    assert mask.tolist() == [[False, True], [True, False]]


def test_magnitude_prune_keeps_floor_of_density_times_size() -> None:
    # int(0.55 · 10) = 5 largest of |[1..10]|
    out = magnitude_prune(t([float(i) for i in range(1, 11)]), 0.55)
    assert out.tolist() == [0, 0, 0, 0, 0, 6, 7, 8, 9, 10]


def test_sparsifiers_never_write_into_their_input() -> None:
    delta = t([1.0, -2.0, 3.0, -4.0])
    keep = delta.clone()
    magnitude_prune(delta, 0.5, "l1")
    magnitude_outliers(delta, 0.5, 0.25, "l1")
    random_drop(delta, 0.5, gen(0), "l1")
    della_magprune(delta, 0.5, 0.1, gen(0), "l1")
    assert torch.equal(delta, keep)


def test_dare_keeps_about_density_fraction_and_paper_rescale_is_one_over_density() -> None:
    delta = torch.ones(100_000)
    out = random_drop(delta, 0.3, gen(0), rescale="inverse_keep_prob")
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.01  # 7 standard deviations
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.3))


def test_dare_mergekit_rescale_restores_the_l1_norm() -> None:
    delta = torch.linspace(-1, 1, 10_001)
    out = random_drop(delta, 0.4, gen(1), rescale="l1")
    torch.testing.assert_close(out.abs().sum(), delta.abs().sum())
    kept = out != 0
    ratio = out[kept] / delta[kept]
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()))


def test_dare_without_rescale_leaves_kept_entries_unchanged() -> None:
    delta = torch.randn(1000, generator=gen(5))
    out = random_drop(delta, 0.5, gen(2), rescale=None)
    kept = out != 0
    assert torch.equal(out[kept], delta[kept])


def test_dare_masks_are_nested_in_density_for_a_fixed_seed() -> None:
    delta = torch.ones(5000)
    low = random_drop(delta, 0.3, gen(7), rescale=None) != 0
    high = random_drop(delta, 0.6, gen(7), rescale=None) != 0
    assert bool((low & ~high).sum() == 0) and high.sum() > low.sum()


def test_della_keep_probability_rises_linearly_with_magnitude_rank() -> None:
    # ranks of |[0.1, 0.5, 0.2, 0.4, 0.3]| are [0, 4, 1, 3, 2]; keep = (0.5 − 0.1) + rank · 0.2/4
    probs = della_keep_probabilities(t([0.1, -0.5, 0.2, 0.4, -0.3]), 0.5, 0.1)
    torch.testing.assert_close(probs, t([0.40, 0.60, 0.45, 0.55, 0.50]))


def test_della_ranks_each_row_separately_and_ties_by_position() -> None:
    probs = della_keep_probabilities(t([[1.0, 2.0], [4.0, 3.0], [7.0, 7.0]]), 0.5, 0.1)
    torch.testing.assert_close(probs, t([[0.4, 0.6], [0.6, 0.4], [0.4, 0.6]]))


def test_della_drops_small_entries_more_often() -> None:
    # 4000 rows of magnitudes 1..10: column c has keep probability 0.3 + c · 0.4/9
    delta = torch.arange(1, 11, dtype=torch.float32).repeat(4000, 1)
    out = della_magprune(delta, 0.5, 0.2, gen(3), rescale=None)
    kept = (out != 0).float().mean(dim=0)
    expected = torch.tensor([0.3 + c * 0.4 / 9 for c in range(10)])
    assert (kept - expected).abs().max() < 0.035  # about 4.4 standard deviations


def test_della_paper_rescale_divides_by_each_keep_probability() -> None:
    delta = t([1.0, 2.0, 3.0, 4.0, 5.0]).repeat(200, 1)
    out = della_magprune(delta, 0.5, 0.2, gen(4), rescale="inverse_keep_prob")
    keep = torch.tensor([0.3, 0.4, 0.5, 0.6, 0.7]).expand_as(delta)
    kept = out != 0
    torch.testing.assert_close(out[kept], (delta / keep)[kept])


def run(name: str, deltas: list[torch.Tensor], seed: int, **params: object) -> torch.Tensor:
    base = torch.zeros_like(deltas[0])
    return get_method(name)(MergeInputs("t", base, deltas=deltas), params, seed=seed)


RANDOMISED = ("dare_linear", "dare_ties", "della", "della_linear")


def test_randomised_methods_are_bit_identical_for_the_same_seed() -> None:
    deltas = [torch.randn(64, 32, generator=gen(10)), torch.randn(64, 32, generator=gen(11))]
    for name in RANDOMISED:
        a = run(name, deltas, 123, weight=[0.7, 1.3], density=[0.4, 0.6])
        b = run(name, deltas, 123, weight=[0.7, 1.3], density=[0.4, 0.6])
        c = run(name, deltas, 124, weight=[0.7, 1.3], density=[0.4, 0.6])
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name


def test_dare_linear_keeps_density_fraction_with_l1_rescale() -> None:
    delta = torch.ones(20_000)
    out = run("dare_linear", [delta], 0, weight=[1.0], density=0.25)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    torch.testing.assert_close(out.sum(), delta.sum())  # rescale: true matches the L1 norm


def test_a_sources_drop_mask_does_not_depend_on_other_sources_densities() -> None:
    # source 0 contributes nothing (zero task vector); changing its density must not reshuffle source 1
    deltas = [torch.zeros(5000), torch.ones(5000)]
    a = run("dare_linear", deltas, 9, weight=[1.0, 1.0], density=[1.0, 0.5], rescale=False)
    b = run("dare_linear", deltas, 9, weight=[1.0, 1.0], density=[0.3, 0.5], rescale=False)
    assert torch.equal(a, b)


def test_della_linear_keeps_about_density_fraction_on_average() -> None:
    delta = torch.randn(200, 100, generator=gen(12))
    out = run("della_linear", [delta], 1, weight=[1.0], density=0.5, epsilon=0.2)
    assert abs((out != 0).float().mean().item() - 0.5) < 0.02


def test_della_ranks_along_dim_one_of_higher_rank_tensors() -> None:
    # mergekit ranks along dim 1: slices x[i, :, j] are ranked separately
    x = t([[[1.0, 9.0], [3.0, 2.0], [2.0, 1.0]], [[0.0, 0.0], [5.0, 0.0], [4.0, 3.0]]])
    probs = della_keep_probabilities(x, 0.5, 0.1)
    torch.testing.assert_close(probs, t([[[0.4, 0.6], [0.6, 0.5], [0.5, 0.4]],
                                         [[0.4, 0.4], [0.6, 0.5], [0.5, 0.6]]]))


@pytest.mark.parametrize("n", [300_000, 1_000_003])
@pytest.mark.parametrize("dtype_roundtrip", [False, True])
def test_bracketed_selection_gives_exactly_kthvalue_on_large_tensors(n, dtype_roundtrip):
    from evomerge.merge.methods.sparsify import kth_largest

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g).abs()
    if dtype_roundtrip:  # bf16 values: many exact ties
        x = x.to(torch.bfloat16).float()
    for k in (1, 7, n // 100, n // 3, n // 2, n - 5, n):
        assert torch.equal(kth_largest(x, k), torch.kthvalue(x, n - k + 1).values), k
    structured = torch.cat([torch.zeros(n // 2), torch.arange(n - n // 2, dtype=torch.float32)])
    for k in (1, n // 4, n // 2, n // 2 + 1, n):
        assert torch.equal(kth_largest(structured, k), torch.kthvalue(structured, n - k + 1).values), k
