"""Evo-Merging's asymmetric sparsification and fusion against hand computations (arXiv 2509.12951)."""

from __future__ import annotations

import pytest
import torch

from evomerge.errors import MergeError
from evomerge.lora import apply_delta, fuse_pair, lora_delta, topk_a

A = torch.tensor([[0.1, -0.9, 0.3],
                  [0.5, -0.2, 0.05]], dtype=torch.float64)


def test_topk_keeps_exactly_the_largest_magnitude_entries_of_a_hand_made_a():
    # 6 entries; alpha 0.5 keeps floor(3.0) = 3: |-0.9|, |0.5|, |0.3|
    assert torch.equal(topk_a(A, 0.5), torch.tensor([[0.0, -0.9, 0.3], [0.5, 0.0, 0.0]], dtype=torch.float64))
    # alpha 0.34 keeps floor(2.04) = 2
    assert torch.equal(topk_a(A, 0.34), torch.tensor([[0.0, -0.9, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(topk_a(A, 1.0), A)
    assert torch.equal(topk_a(A, 0.0), torch.zeros_like(A))


def test_topk_breaks_magnitude_ties_by_position_so_exactly_k_survive():
    tied = torch.tensor([[0.2, -0.2, 0.2, 0.1]])
    assert torch.equal(topk_a(tied, 0.5), torch.tensor([[0.2, -0.2, 0.0, 0.0]]))


def test_topk_is_per_matrix_and_rejects_fractions_outside_zero_one():
    big = torch.tensor([[10.0, 20.0]])
    assert torch.equal(topk_a(big, 0.5), torch.tensor([[0.0, 20.0]]))  # not a global threshold across matrices
    with pytest.raises(MergeError, match="alpha"):
        topk_a(A, 1.2)


def test_fusion_equals_a_hand_computation_on_two_tiny_adapters():
    a1 = torch.tensor([[1.0, -4.0], [2.0, 0.5]], dtype=torch.float64)
    b1 = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]], dtype=torch.float64)
    a2 = torch.tensor([[-3.0, 1.0], [0.25, 2.0]], dtype=torch.float64)
    b2 = torch.tensor([[0.5, 0.0], [2.0, 1.0], [-1.0, 4.0]], dtype=torch.float64)
    fused_a, fused_b = fuse_pair([a1, a2], [b1, b2], alpha=[0.5, 0.75], beta=[2.0, -1.0])
    # topk(a1, 0.5) keeps 2 of 4: -4 and 2 ; topk(a2, 0.75) keeps 3 of 4: -3, 2, 1
    expected_a = torch.tensor([[2 * 0.0 - 1 * -3.0, 2 * -4.0 - 1 * 1.0],
                               [2 * 2.0 - 1 * 0.0, 2 * 0.0 - 1 * 2.0]], dtype=torch.float64)
    expected_b = torch.tensor([[2 * 1.0 - 0.5, 2 * 2.0 - 0.0],
                               [2 * 0.0 - 2.0, 2 * -1.0 - 1.0],
                               [2 * 3.0 + 1.0, 2 * 1.0 - 4.0]], dtype=torch.float64)
    assert torch.equal(fused_a, expected_a)
    assert torch.equal(fused_b, expected_b)  # B is never sparsified


def test_fused_update_holds_the_cross_terms_so_it_is_not_the_weighted_sum_of_updates():
    a = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    b = [torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])]
    fa, fb = fuse_pair(a, b, alpha=[1.0, 1.0], beta=[0.5, 0.5])
    paper = fb @ fa  # (Σβ B_i)(Σβ A_i) = 0.25 · [[1, 1], [1, 1]]
    task_arithmetic = sum(0.5 * (bi @ ai) for ai, bi in zip(a, b, strict=True))  # 0.5 · I
    assert torch.equal(paper, torch.full((2, 2), 0.25))
    assert torch.equal(task_arithmetic, 0.5 * torch.eye(2))


def test_alpha_zero_empties_a_but_keeps_b():
    a = [torch.ones(2, 3)]
    b = [torch.full((4, 2), 3.0)]
    fa, fb = fuse_pair(a, b, alpha=[0.0], beta=[0.5])
    assert torch.equal(fa, torch.zeros(2, 3)) and torch.equal(fb, torch.full((4, 2), 1.5))


def test_applying_a_fused_adapter_equals_w0_plus_scaled_b_times_a_by_hand():
    w0 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = torch.tensor([[2.0], [-1.0]])
    a = torch.tensor([[0.5, 0.0, -1.0]])
    # B·A = [[1, 0, -2], [-0.5, 0, 1]]; scaling 2
    assert torch.equal(lora_delta(a, b, 2.0), torch.tensor([[2.0, 0.0, -4.0], [-1.0, 0.0, 2.0]]))
    assert torch.equal(apply_delta(w0, a, b, 2.0), torch.tensor([[3.0, 2.0, -1.0], [3.0, 5.0, 8.0]]))


def test_fusion_needs_one_alpha_and_beta_per_adapter():
    with pytest.raises(MergeError, match="one of each per adapter"):
        fuse_pair([A], [A.T], alpha=[1.0, 1.0], beta=[1.0])
