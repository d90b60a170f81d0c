"""CycleQD's operators against hand computations (arXiv 2410.14735 §3): bins, crossover, SVD mutation,
elite sampling, parent choice and the softmax aggregation weights."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.evolve.cycleqd_ops import (
    bin_index,
    bin_ranges,
    cell_of,
    crossover,
    elite_probabilities,
    elite_probabilities_code,
    pick_two,
    softmax,
    svd_perturbation,
)


def test_bin_range_is_085_worst_to_115_best_expert_per_task() -> None:
    experts = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.0, 1.0]])
    lo, hi = bin_ranges(experts)
    np.testing.assert_allclose(lo, [0.085, 0.0, 0.0])
    np.testing.assert_allclose(hi, [1.035, 0.92, 1.15])


def test_bin_range_contains_negative_experts_and_widens_a_degenerate_one() -> None:
    lo, hi = bin_ranges(np.array([[-2.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(lo, [-2.3, 0.0])
    np.testing.assert_allclose(hi, [-0.85, 1.0])


@pytest.mark.parametrize(("x", "expected"), [(0.05, 0), (0.55, 5), (0.95, 9), (1.49, 14), (2.0, 14), (-0.3, 0)])
def test_bin_index_is_equal_width_and_clipped(x: float, expected: int) -> None:
    assert bin_index(x, 0.0, 1.5, 15) == expected  # width 0.1


def test_cell_of_archive_k_bins_the_other_tasks_in_order() -> None:
    scores, lo, hi = np.array([0.55, 0.25, 1.25]), np.zeros(3), np.full(3, 1.5)
    assert cell_of(scores, 0, lo, hi, 15) == (2, 12)
    assert cell_of(scores, 1, lo, hi, 15) == (5, 12)
    assert cell_of(scores, 2, lo, hi, 15) == (5, 2)


def test_crossover_is_the_normalised_weighted_mean() -> None:
    tau1 = np.array([1.0, 2.0, -1.0], dtype=np.float32)
    tau2 = np.array([3.0, 0.0, 1.0], dtype=np.float32)
    child = crossover(tau1, tau2, np.array([1.0, 3.0]))  # 1/4 and 3/4
    assert child.dtype == np.float32
    np.testing.assert_allclose(child, [2.5, 0.5, 0.5], rtol=1e-7)


def _known_svd() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, -2.0]]) / 3.0  # orthonormal columns
    v = np.array([[0.6, -0.8], [0.8, 0.6]])
    return u, np.array([3.0, 1.0]), v


def test_svd_mutation_amplifies_each_singular_value_by_one_plus_w() -> None:
    u, s, v = _known_svd()
    matrix = u @ np.diag(s) @ v.T
    w = np.array([0.1, 0.2])
    mutated = matrix + svd_perturbation(matrix, w)
    np.testing.assert_allclose(mutated, u @ np.diag([3.3, 1.2]) @ v.T, atol=1e-12)


def test_svd_mutation_in_another_basis_adds_that_basis_scaled_component() -> None:
    u, s, v = _known_svd()
    basis = u @ np.diag(s) @ v.T
    matrix = np.arange(6, dtype=np.float64).reshape(3, 2)
    w = np.array([0.3, 0.0])
    np.testing.assert_allclose(svd_perturbation(matrix, w, basis), 0.9 * np.outer(u[:, 0], v[:, 0]), atol=1e-12)


def test_svd_mutation_rejects_weights_of_the_wrong_rank() -> None:
    with pytest.raises(ValueError, match="2 singular values"):
        svd_perturbation(np.ones((3, 2)), np.ones(3))


def test_elite_sampling_probabilities_match_the_hand_computation() -> None:
    scores = np.array([[0.2, 0.5, 0.0], [0.6, 0.5, 1.0], [1.0, 0.5, 0.25]])
    # task 0: norm 0, .5, 1 -> .5, .65, .8; task 1 ties (cancels); task 2: norm 0, 1, .25 -> .5, .8, .575
    expected = np.array([0.5 * 0.5, 0.65 * 0.8, 0.8 * 0.575])
    np.testing.assert_allclose(elite_probabilities(scores), expected / expected.sum())


def test_code_elite_sampler_normalises_quality_and_cell_indices_into_half_to_1_3() -> None:
    quality = np.array([0.2, 0.6, 1.0])
    cells = np.array([[5, 0], [5, 14], [5, 7]])
    expected = np.array([0.5 * 1 * 0.5, 0.9 * 1 * 1.3, 1.3 * 1 * 0.9])
    np.testing.assert_allclose(elite_probabilities_code(quality, cells), expected / expected.sum())


@pytest.mark.parametrize(("u1", "u2", "expected"), [(0.1, 0.7, (0, 2)), (0.65, 0.39, (1, 0)), (0.2, 0.0, (1, 0)),
                                                    (0.99, 0.99, (2, 1))])
def test_pick_two_draws_distinct_parents_by_inverse_cdf(u1: float, u2: float, expected: tuple[int, int]) -> None:
    assert pick_two(np.array([0.2, 0.5, 0.3]), u1, u2) == expected


def test_pick_two_with_one_elite_uses_it_twice() -> None:
    assert pick_two(np.array([1.0]), 0.3, 0.9) == (0, 0)


def test_softmax_weights_match_the_hand_computation() -> None:
    e = np.exp([0.9, 0.7, 1.0])
    np.testing.assert_allclose(softmax(np.array([0.9, 0.7, 1.0])), e / e.sum())
    e = np.exp([1.8, 1.4, 2.0])
    np.testing.assert_allclose(softmax(np.array([0.9, 0.7, 1.0]), temperature=0.5), e / e.sum())
