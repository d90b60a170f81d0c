"""Hand-computed expectations for linear, slerp, model_stock and passthrough."""

from __future__ import annotations

import math

import torch

from evomerge.merge import MergeInputs, get_method


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def run(name: str, sources: list[list], base: list | None = None, **params: object) -> torch.Tensor:
    inputs = MergeInputs("t", None if base is None else t(base), sources=[t(s) for s in sources])
    return get_method(name)(inputs, params)


A = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
B = [[3.0, 2.0, 1.0], [0.0, -1.0, 2.0]]


def test_linear_is_weighted_average_when_normalized() -> None:
    # (1·A + 3·B) / 4
    out = run("linear", [A, B], weight=[1.0, 3.0])
    torch.testing.assert_close(out, t([[2.5, 2.0, 1.5], [1.0, 0.5, 3.0]]))


def test_linear_without_normalize_is_weighted_sum() -> None:
    out = run("linear", [A, B], weight=[1.0, 3.0], normalize=False)
    torch.testing.assert_close(out, t([[10.0, 8.0, 6.0], [4.0, 2.0, 12.0]]))


def test_linear_accepts_negative_and_amplifying_weights() -> None:
    # 2·A − B; the weights sum to 1, so normalize changes nothing
    out = run("linear", [A, B], weight=[2.0, -1.0])
    torch.testing.assert_close(out, t([[-1.0, 2.0, 5.0], [8.0, 11.0, 10.0]]))


def test_linear_needs_no_base_and_ignores_one_given() -> None:
    out = run("linear", [A, B], base=[[9.0] * 3] * 2, weight=[1.0, 1.0])
    torch.testing.assert_close(out, t([[2.0, 2.0, 2.0], [2.0, 2.0, 4.0]]))


def test_slerp_follows_the_great_circle_between_orthogonal_vectors() -> None:
    # θ = π/2; t = 1/3 lands at angle π/6 on the unit circle
    out = run("slerp", [[1.0, 0.0], [0.0, 1.0]], t=1 / 3)
    torch.testing.assert_close(out, t([math.sqrt(3) / 2, 0.5]))


def test_slerp_interpolates_directions_not_norms() -> None:
    # |v0| = 2, |v1| = 3, θ = π/2, t = 0.5: s0 = s1 = sin(π/4) / sin(π/2)
    s = math.sqrt(2) / 2
    out = run("slerp", [[2.0, 0.0], [0.0, 3.0]], t=0.5)
    torch.testing.assert_close(out, t([2 * s, 3 * s]))


def test_slerp_at_sixty_degrees_halfway_is_thirty_degrees() -> None:
    out = run("slerp", [[1.0, 0.0], [0.5, math.sqrt(3) / 2]], t=0.5)
    torch.testing.assert_close(out, t([math.sqrt(3) / 2, 0.5]))


def test_slerp_treats_a_matrix_as_one_flattened_vector() -> None:
    s = math.sqrt(2) / 2
    out = run("slerp", [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]], t=0.5)
    torch.testing.assert_close(out, t([[s, 0.0], [0.0, s]]))


def test_slerp_falls_back_to_linear_for_colinear_vectors() -> None:
    # cos = 1 > 0.9995: 0.75·[1, 2] + 0.25·[2, 4]
    out = run("slerp", [[1.0, 2.0], [2.0, 4.0]], t=0.25)
    torch.testing.assert_close(out, t([1.25, 2.5]))


def test_slerp_falls_back_to_linear_for_opposite_vectors() -> None:
    # cos = −1: |cos| > 0.9995 also lerps (mergekit), halfway is the origin
    out = run("slerp", [[1.0, 2.0], [-1.0, -2.0]], t=0.5)
    torch.testing.assert_close(out, t([0.0, 0.0]))


def test_model_stock_keeps_base_for_orthogonal_task_vectors() -> None:
    # cos = 0 -> t = 0
    out = run("model_stock", [[2.0, 1.0], [1.0, 2.0]], base=[1.0, 1.0])
    torch.testing.assert_close(out, t([1.0, 1.0]))


def test_model_stock_ratio_follows_pairwise_cosine() -> None:
    # τ1 = [1, 0], τ2 = [1, 1]: cos = 1/√2, t = 2c / (1 + c) = 2(√2 − 1); mean τ = [1, 0.5]
    ratio = 2 * (math.sqrt(2) - 1)
    out = run("model_stock", [[2.0, 1.0], [2.0, 2.0]], base=[1.0, 1.0])
    torch.testing.assert_close(out, t([1 + ratio, 1 + 0.5 * ratio]))


def test_model_stock_averages_pairwise_cosines_for_three_sources() -> None:
    # τ = [1,0], [0,1], [1,1]: cosines 0, 1/√2, 1/√2 -> c = √2/3; t = 3c / (1 + 2c); mean τ = [2/3, 2/3]
    c = math.sqrt(2) / 3
    ratio = 3 * c / (1 + 2 * c)
    out = run("model_stock", [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], base=[0.0, 0.0])
    torch.testing.assert_close(out, t([2 / 3 * ratio, 2 / 3 * ratio]))


def test_model_stock_filter_wise_uses_one_ratio_per_row() -> None:
    # row 0: τ1 = [1, 0], τ2 = [0, 1] -> cos 0, t 0; row 1: both [1, 0] -> cos 1, t = 2/(1+1) = 1
    out = run("model_stock", [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]],
              base=[[0.0, 0.0], [0.0, 0.0]], filter_wise=True)
    torch.testing.assert_close(out, t([[0.0, 0.0], [1.0, 0.0]]))


def test_model_stock_whole_tensor_uses_one_ratio() -> None:
    # flattened τ1 = [1,0,1,0], τ2 = [0,1,1,0]: cos = 1/2, t = 2·½ / (1 + ½) = 2/3; mean = [½, ½, 1, 0]
    out = run("model_stock", [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]],
              base=[[0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(out, t([[1 / 3, 1 / 3], [2 / 3, 0.0]]))


def test_passthrough_returns_a_copy_of_its_single_source() -> None:
    source = t([[1.0, -2.0]])
    out = get_method("passthrough")(MergeInputs("t", None, sources=[source]))
    assert torch.equal(out, source)
    out.add_(1)
    assert torch.equal(source, t([[1.0, -2.0]])), "the caller's tensor must not be aliased"


def test_passthrough_scale_multiplies_the_tensor() -> None:
    out = run("passthrough", [[1.0, -2.0]], scale=0.5)
    torch.testing.assert_close(out, t([0.5, -1.0]))
