"""Hand-computed expectations for the deterministic task-vector methods.

Every expected tensor below is worked out from the method's definition in the
comment next to it, never by calling the code under test.
"""

from __future__ import annotations

import torch

from evomerge.merge import MergeInputs, get_method


def merge(name: str, base: list, sources: list[list], **params: object) -> torch.Tensor:
    inputs = MergeInputs("t", torch.tensor(base), sources=[torch.tensor(s) for s in sources])
    return get_method(name)(inputs, params)


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- task arithmetic -------------------------------------------------------------------------
# base 1; τ1 = [1, -1, 0, 2]; τ2 = [0, 2, -2, 0]
TA_BASE = [1.0, 1.0, 1.0, 1.0]
TA_SOURCES = [[2.0, 0.0, 1.0, 3.0], [1.0, 3.0, -1.0, 1.0]]


def test_task_arithmetic_adds_weighted_task_vectors_to_base() -> None:
    # 0.5·τ1 + τ2 = [0.5, 1.5, -2, 1]
    out = merge("task_arithmetic", TA_BASE, TA_SOURCES, weight=[0.5, 1.0])
    torch.testing.assert_close(out, t([1.5, 2.5, -1.0, 2.0]))


def test_task_arithmetic_lambda_scales_the_merged_task_vector_only() -> None:
    out = merge("task_arithmetic", TA_BASE, TA_SOURCES, weight=[0.5, 1.0], **{"lambda": 2.0})
    torch.testing.assert_close(out, t([2.0, 4.0, -3.0, 3.0]))


def test_task_arithmetic_normalize_divides_by_weight_sum() -> None:
    # [0.5, 1.5, -2, 1] / 1.5
    out = merge("task_arithmetic", TA_BASE, TA_SOURCES, weight=[0.5, 1.0], normalize=True)
    torch.testing.assert_close(out, t([1 + 1 / 3, 2.0, 1 - 4 / 3, 1 + 2 / 3]))


def test_task_arithmetic_skips_normalization_when_weights_sum_to_zero() -> None:
    # mergekit: divisor |Σw| < 1e-8 is replaced by 1, so the result is base + τ1 − τ2
    out = merge("task_arithmetic", TA_BASE, TA_SOURCES, weight=[1.0, -1.0], normalize=True)
    torch.testing.assert_close(out, t([2.0, -2.0, 3.0, 3.0]))


# --- TIES --------------------------------------------------------------------------------------
ZERO6 = [0.0] * 6
TAU1 = [4.0, -3.0, 2.0, -1.0, 0.5, 6.0]
TAU2 = [-2.0, -5.0, 1.0, 3.0, -0.5, 1.5]
# density 0.5 of 6 entries keeps int(3) = 3 per task vector:
# trimmed τ1 = [4, -3, 0, 0, 0, 6]; trimmed τ2 = [-2, -5, 0, 3, 0, 0]


def test_ties_keeps_only_entries_agreeing_with_elected_sign() -> None:
    # Σ w·τ = [2, -8, 0, 3, 0, 6] elects [+, −, +, +, +, +]; τ2's −2 at index 0 disagrees,
    # index 2 and 4 have no surviving entry. Disjoint mean: [4/1, -8/2, 0, 3/1, 0, 6/1].
    out = merge("ties", ZERO6, [TAU1, TAU2], weight=[1.0, 1.0], density=0.5)
    torch.testing.assert_close(out, t([4.0, -4.0, 0.0, 3.0, 0.0, 6.0]))


def test_ties_without_normalize_sums_agreeing_entries() -> None:
    out = merge("ties", ZERO6, [TAU1, TAU2], weight=[1.0, 1.0], density=0.5, normalize=False)
    torch.testing.assert_close(out, t([4.0, -8.0, 0.0, 3.0, 0.0, 6.0]))


def test_ties_elects_sign_on_weighted_task_vectors() -> None:
    # w = [1, 3]: 3·τ2 = [-6, -15, 0, 9, 0, 0]; Σ = [-2, -18, 0, 9, 0, 6] elects − at index 0,
    # so τ2 now wins there: [-6/3, (-3-15)/(1+3), 0, 9/3, 0, 6/1]
    out = merge("ties", ZERO6, [TAU1, TAU2], weight=[1.0, 3.0], density=0.5)
    torch.testing.assert_close(out, t([-2.0, -4.5, 0.0, 3.0, 0.0, 6.0]))


def test_ties_adds_lambda_scaled_merge_to_base() -> None:
    out = merge("ties", [1.0] * 6, [[1 + x for x in TAU1], [1 + x for x in TAU2]],
                weight=[1.0, 1.0], density=0.5, **{"lambda": 2.0})
    torch.testing.assert_close(out, t([9.0, -7.0, 1.0, 7.0, 1.0, 13.0]))


def test_ties_exact_cancellation_elects_positive_sign() -> None:
    # mergekit: the elected sign is + where Σ w·τ >= 0, so +1 survives and -1 is dropped
    out = merge("ties", [0.0], [[1.0], [-1.0]], weight=[1.0, 1.0])
    torch.testing.assert_close(out, t([1.0]))


def test_ties_divides_by_one_where_agreeing_weights_sum_to_zero() -> None:
    # w = [1, -1]: w·τ1 = [1, 2], w·τ2 = [-1, 3]; Σ = [0, 5] elects + for both.
    # index 0: only τ1 agrees -> 1/1. index 1: both agree, Σw = 0 -> divisor 1 -> 5.
    out = merge("ties", [0.0, 0.0], [[1.0, 2.0], [1.0, -3.0]], weight=[1.0, -1.0])
    torch.testing.assert_close(out, t([1.0, 5.0]))


def test_ties_trim_breaks_magnitude_ties_by_position() -> None:
    # |τ| = [2, 2, 2, 1], density 0.5 keeps 2 entries: the first two of the tied 2s
    out = merge("ties", [0.0] * 4, [[2.0, -2.0, 2.0, 1.0]], weight=[1.0], density=0.5)
    torch.testing.assert_close(out, t([2.0, -2.0, 0.0, 0.0]))


def test_ties_rescale_restores_l1_norm_of_trimmed_task_vector() -> None:
    # mergekit's rescale for ties: keep [4, 0, 0, -2] (L1 6) scaled to L1 of [4, 1, 1, -2] = 8
    out = merge("ties", [0.0] * 4, [[4.0, 1.0, 1.0, -2.0]], weight=[1.0], density=0.5, rescale=True)
    torch.testing.assert_close(out, t([4 * 8 / 6, 0.0, 0.0, -2 * 8 / 6]))


# --- breadcrumbs -------------------------------------------------------------------------------
ZERO10 = [0.0] * 10
CRUMBS = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0, -10.0]


def test_breadcrumbs_drops_largest_gamma_fraction_and_smallest_entries() -> None:
    # n = 10, keep int(0.5·10) = 5, top cut int(0.1·10) = 1 (the 10), bottom cut 10-5-1 = 4 (1..4)
    out = merge("breadcrumbs", ZERO10, [CRUMBS], weight=[2.0], density=0.5, gamma=0.1)
    torch.testing.assert_close(out, 2 * t([0, 0, 0, 0, 5, -6, 7, -8, 9, 0]))


def test_breadcrumbs_density_wins_over_gamma_when_both_cannot_hold() -> None:
    # keep 8, top cut int(0.3·10) = 3 leaves bottom cut -1: mergekit shrinks the top cut to 2
    out = merge("breadcrumbs", ZERO10, [CRUMBS], weight=[1.0], density=0.8, gamma=0.3)
    torch.testing.assert_close(out, t([1, -2, 3, -4, 5, -6, 7, -8, 0, 0]))


def test_breadcrumbs_with_zero_gamma_is_magnitude_top_k() -> None:
    # (mergekit's slice [n_bot:-0] would keep nothing here; we keep the intended 5)
    out = merge("breadcrumbs", ZERO10, [CRUMBS], weight=[1.0], density=0.5, gamma=0.0)
    torch.testing.assert_close(out, t([0, 0, 0, 0, 0, -6, 7, -8, 9, -10]))


def test_breadcrumbs_density_one_ignores_gamma() -> None:
    out = merge("breadcrumbs", ZERO10, [CRUMBS], weight=[1.0], density=1.0, gamma=0.1)
    torch.testing.assert_close(out, t(CRUMBS))


CRUMBS2 = [-10.0, 9.0, -8.0, 7.0, -6.0, 5.0, -4.0, 3.0, -2.0, 1.0]
# bands (density 0.5, gamma 0.1): τ1 -> [0,0,0,0,5,-6,7,-8,9,0]; τ2 -> [0,9,-8,7,-6,5,0,0,0,0]


def test_breadcrumbs_sums_banded_task_vectors() -> None:
    out = merge("breadcrumbs", ZERO10, [CRUMBS, CRUMBS2], weight=[1.0, 1.0], density=0.5, gamma=0.1)
    torch.testing.assert_close(out, t([0, 9, -8, 7, -1, -1, 7, -8, 9, 0]))


def test_breadcrumbs_ties_keeps_only_agreeing_banded_entries() -> None:
    # Σ = [0, 9, -8, 7, -1, -1, 7, -8, 9, 0]: at index 4 (−) only τ2's −6 agrees,
    # at index 5 (−) only τ1's −6; normalize is off by default (mergekit)
    out = merge("breadcrumbs_ties", ZERO10, [CRUMBS, CRUMBS2], weight=[1.0, 1.0], density=0.5, gamma=0.1)
    torch.testing.assert_close(out, t([0, 9, -8, 7, -6, -6, 7, -8, 9, 0]))


# --- DARE / DELLA at density 1 (no randomness) -------------------------------------------------
# density 1: Σ w·τ = [2, -8, 3, 2, 0, 7.5] elects [+, −, +, +, +, +];
# agreeing sums [4, -8, 3, 3, 0.5, 7.5] over agreeing weights [1, 2, 2, 1, 1, 2]


def test_dare_ties_at_density_one_is_sign_consensus_sum() -> None:
    out = get_method("dare_ties")(
        MergeInputs("t", t(ZERO6), sources=[t(TAU1), t(TAU2)]), {"weight": [1.0, 1.0]}, seed=0)
    torch.testing.assert_close(out, t([4.0, -8.0, 3.0, 3.0, 0.5, 7.5]))


def test_della_at_density_one_is_normalized_sign_consensus() -> None:
    out = get_method("della")(
        MergeInputs("t", t(ZERO6), sources=[t(TAU1), t(TAU2)]), {"weight": [1.0, 1.0]}, seed=0)
    torch.testing.assert_close(out, t([4.0, -4.0, 1.5, 3.0, 0.5, 3.75]))


def test_dare_linear_and_della_linear_at_density_one_are_task_arithmetic() -> None:
    for name in ("dare_linear", "della_linear"):
        out = get_method(name)(
            MergeInputs("t", t(TA_BASE), sources=[t(s) for s in TA_SOURCES]), {"weight": [0.5, 1.0]}, seed=3)
        torch.testing.assert_close(out, t([1.5, 2.5, -1.0, 2.0]))
