"""The eight methods mergekit has beyond the task-vector family, against hand-computed small cases."""

from __future__ import annotations

import math

import pytest
import torch

from evomerge.errors import MergeError
from evomerge.merge import MergeInputs, get_method
from evomerge.merge.methods.arcee_fusion import quantile_floor

S = 1 / math.sqrt(2)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def merge(name: str, base: torch.Tensor | None, sources: list[torch.Tensor], **params: object) -> torch.Tensor:
    return get_method(name)(MergeInputs("w", base, sources=sources), params)


def close(got: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(got, torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=1e-5)


# ---- nearswap ------------------------------------------------------------------------------------------
def test_nearswap_swaps_entries_closer_than_t_and_moves_the_others_by_t() -> None:
    base, model = t(0.0, 0.0, 0.0, 1.0), t(0.0005, 0.002, -0.01, 1.0)
    # weight = clamp(t / |diff|, 0, 1) = [1, 0.5, 0.1, 1 (diff clamped at 1e-6)]
    close(merge("nearswap", base, [model], t=0.001), [0.0005, 0.001, -0.001, 1.0])


def test_nearswap_at_t_zero_is_the_base() -> None:
    base, model = t(1.0, 2.0), t(3.0, -1.0)
    close(merge("nearswap", base, [model], t=0.0), base)


# ---- RAM -----------------------------------------------------------------------------------------------
def test_ram_keeps_unique_changes_and_averages_shared_ones_over_the_models_that_made_them() -> None:
    base = t(1.0, 1.0, 1.0, 1.0)
    a, b = base + t(1.0, 2.0, 0.0, 1e-6), base + t(3.0, 0.0, 0.0, 5.0)
    # entry 0: both changed -> mean 2; 1: only a -> 2; 2: nobody; 3: a's 1e-6 is below epsilon -> b's 5
    close(merge("ram", base, [a, b]), [3.0, 3.0, 1.0, 6.0])


def test_ramplus_amplifies_each_models_unique_changes_by_its_shared_to_unique_ratio() -> None:
    base = t(0.0, 0.0, 0.0, 0.0)
    a, b = t(1.0, 2.0, 4.0, 0.0), t(3.0, 0.0, 0.0, 6.0)
    # a: 1 shared, 2 unique -> rho 0.5 -> lambda 1 + 0.5*0.5 = 1.25; b: 1 shared, 1 unique -> 1.5
    close(merge("ramplus_tl", base, [a, b], r=0.5, alpha=2.0), [2.0, 2.5, 5.0, 9.0])
    # alpha caps rho: both at 0.25 -> lambda 1.125
    close(merge("ramplus_tl", base, [a, b], r=0.5, alpha=0.25), [2.0, 2.25, 4.5, 6.75])
    close(merge("ramplus_tl", base, [a, b], r=0.0), merge("ram", base, [a, b]))


# ---- SCE -----------------------------------------------------------------------------------------------
def test_sce_weights_sources_by_mean_square_and_keeps_only_agreeing_signs() -> None:
    base = t(0.0, 0.0)
    a, b = t(1.0, -2.0), t(3.0, 1.0)
    # coefficients: mean squares 2.5 and 5 -> 1/3, 2/3; entry 0: both +, (1/3 + 2)/1 = 7/3;
    # entry 1: elected sign - (sum -1), only a agrees -> -2
    close(merge("sce", base, [a, b]), [7 / 3, -2.0])


def test_sce_selects_the_entries_that_vary_most_across_sources() -> None:
    base = t(0.0, 0.0)
    a, b = t(1.0, -2.0), t(3.0, 1.0)
    # variances 1 and 2.25: select_topk 0.5 keeps entry 1 only; coefficients then 0.8, 0.2; entry 0 -> 0
    close(merge("sce", base, [a, b], select_topk=0.5), [0.0, -2.0])
    close(merge("sce", base, [a, b], select_topk=0.0), [0.0, 0.0])


# ---- NuSLERP -------------------------------------------------------------------------------------------
def test_nuslerp_of_orthogonal_unit_vectors_at_equal_weights_is_their_normalised_mean() -> None:
    close(merge("nuslerp", None, [t(1.0, 0.0), t(0.0, 1.0)], weight=[1.0, 1.0]), [S, S])


def test_nuslerp_t_is_the_second_weight_over_the_sum() -> None:
    got = merge("nuslerp", None, [t(1.0, 0.0), t(0.0, 1.0)], weight=[2.0, 1.0])  # t = 1/3: angle 30 degrees
    close(got, [math.cos(math.pi / 6), math.sin(math.pi / 6)])


def test_nuslerp_per_row_and_per_column() -> None:
    v0, v1 = t([1.0, 0.0], [1.0, 0.0]), t([0.0, 1.0], [2.0, 0.0])
    rows = merge("nuslerp", None, [v0, v1], weight=[1.0, 1.0], nuslerp_flatten=False)
    close(rows, [[S, S], [1.5, 0.0]])  # row 1 is colinear: linear interpolation
    cols = merge("nuslerp", None, [v0, v1], weight=[1.0, 1.0], nuslerp_flatten=False, nuslerp_row_wise=True)
    c = math.sin(math.pi / 8) / math.sin(math.pi / 4)  # column 0: [1, 1] and [0, 2] are 45 degrees apart
    close(cols, [[c * 1, S], [c * 3, 0.0]])  # column 1: a zero vector and [1, 0] (cos 0, 90 degrees)


def test_nuslerp_with_a_base_interpolates_the_task_vectors() -> None:
    base = t(5.0, 5.0)
    close(merge("nuslerp", base, [t(6.0, 5.0), t(5.0, 6.0)], weight=[1.0, 1.0]), [5 + S, 5 + S])


# ---- Multi-SLERP ---------------------------------------------------------------------------------------
def test_multislerp_of_orthonormal_vectors_with_equal_weights_is_their_spherical_centre() -> None:
    eye = torch.eye(3)
    close(merge("multislerp", None, list(eye), weight=[1.0, 1.0, 1.0]), [1 / math.sqrt(3)] * 3)


def test_multislerp_of_two_models_agrees_with_nuslerp_midpoint_and_scales_to_the_mean_norm() -> None:
    got = merge("multislerp", None, [t(2.0, 0.0), t(0.0, 4.0)], weight=[1.0, 1.0])
    close(got, [3 * S, 3 * S], atol=1e-5)


def test_multislerp_of_one_model_is_that_model_and_untouched_tensors_keep_the_base() -> None:
    close(merge("multislerp", None, [t(1.0, 2.0)], weight=[0.3]), [1.0, 2.0])
    base = t(1.0, 2.0)
    close(merge("multislerp", base, [base.clone(), base.clone(), base.clone()], weight=[1.0, 1.0, 1.0]), base)


def test_multislerp_refuses_antipodal_models_whose_weights_cancel() -> None:
    x = t(1.0, 0.0)
    with pytest.raises(MergeError, match="tensor 'w': multislerp"):
        merge("multislerp", None, [x, -x, t(0.0, 0.0)], weight=[1.0, 1.0, 1.0])


# ---- Karcher -------------------------------------------------------------------------------------------
def test_karcher_mean_of_two_orthogonal_vectors_bisects_them_at_the_mean_norm() -> None:
    close(merge("karcher", None, [t(2.0, 0.0), t(0.0, 4.0)]), [3 * S, 3 * S], atol=1e-5)


def test_karcher_mean_on_a_circle_is_the_mean_angle() -> None:
    # directions at 0, 0 and 90 degrees: the Riemannian mean is at 30 degrees (the Euclidean start is at 26.6)
    got = merge("karcher", None, [t(1.0, 0.0), t(1.0, 0.0), t(0.0, 1.0)], max_iter=50, tol=1e-7)
    close(got, [math.cos(math.pi / 6), math.sin(math.pi / 6)], atol=1e-5)
    one_step = merge("karcher", None, [t(1.0, 0.0), t(1.0, 0.0), t(0.0, 1.0)], max_iter=1)
    assert abs(math.atan2(one_step[1], one_step[0]) - math.pi / 6) < abs(math.atan(0.5) - math.pi / 6)


def test_karcher_ignores_zero_tensors_in_the_direction_but_counts_them_in_the_norm() -> None:
    close(merge("karcher", None, [t(0.0, 3.0), t(0.0, 0.0)]), [0.0, 1.5])


# ---- Arcee Fusion --------------------------------------------------------------------------------------
def test_quantiles_take_the_sorted_entry_at_the_floor_index() -> None:
    x = t(5.0, 1.0, 4.0, 2.0, 3.0)
    assert [float(quantile_floor(x, q)) for q in (0.25, 0.5, 0.75)] == [2.0, 3.0, 4.0]


def test_arcee_fusion_keeps_only_the_changes_above_tukeys_fence() -> None:
    base = torch.zeros(8, 4)
    delta = torch.zeros(8, 4)
    for k in range(7):  # small alternating changes growing with the row: importance ~ k^3
        delta[k] = 0.01 * (k + 1) * t(1.0, -1.0, 1.0, -1.0)
    delta[7, 0] = 4.0  # one large change in one row: a far outlier
    got = merge("arcee_fusion", base, [base + delta])
    expected = torch.zeros(8, 4)
    expected[7, 0] = 4.0
    close(got, expected)
