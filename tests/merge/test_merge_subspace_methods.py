"""TSV-M (arXiv 2412.00081), Iso-C and Iso-CTS (arXiv 2502.04959) against hand-computed small cases."""

from __future__ import annotations

import math

import torch

from evomerge.merge import MergeInputs, get_method
from evomerge.merge.methods.isotropic import common_size


def merge(name: str, base: torch.Tensor, deltas: list[torch.Tensor], **params: object) -> torch.Tensor:
    return get_method(name)(MergeInputs("w", base, deltas=deltas), params)


def rot(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([math.cos(a), math.sin(a)])


def outer(s: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return s * torch.outer(u, v)


E = torch.eye(4)


def test_tsv_m_of_task_vectors_in_orthogonal_subspaces_is_their_sum() -> None:
    # two rank-2 tasks on disjoint coordinates: each keeps its top 4/2 = 2 directions, already orthonormal
    t1 = outer(3.0, E[0], E[1]) + outer(1.0, E[1], E[0])
    t2 = outer(2.0, E[2], E[3]) + outer(0.5, E[3], E[2])
    base = torch.full((4, 4), 0.25)
    torch.testing.assert_close(merge("tsv_m", base, [t1, t2]), base + t1 + t2)
    torch.testing.assert_close(merge("tsv_m", base, [t1, t2], **{"lambda": 0.5}), base + 0.5 * (t1 + t2))


def test_tsv_m_decorrelates_overlapping_singular_vectors_symmetrically() -> None:
    # rank-1 tasks whose left (and right) vectors are 60 degrees apart: the polar factor of [u1 u2] is the
    # orthonormal pair symmetric about them, at -15 and 75 degrees (same for the right vectors)
    t1 = outer(3.0, rot(0), rot(90))
    t2 = outer(2.0, rot(60), rot(150))
    expected = outer(3.0, rot(-15), rot(75)) + outer(2.0, rot(75), rot(165))
    torch.testing.assert_close(merge("tsv_m", torch.zeros(2, 2), [t1, t2]), expected, atol=1e-6, rtol=1e-5)


def test_tsv_m_iso_c_and_iso_cts_average_non_matrix_tensors() -> None:
    base, d1, d2 = torch.tensor([1.0, 2.0]), torch.tensor([1.0, -1.0]), torch.tensor([3.0, 0.0])
    for name in ("tsv_m", "iso_c", "iso_cts"):
        torch.testing.assert_close(merge(name, base, [d1, d2], **{"lambda": 2.0}), base + 2 * (d1 + d2) / 2)


def test_iso_c_flattens_the_spectrum_of_the_summed_task_vectors_to_its_mean() -> None:
    t1, t2 = torch.diag(torch.tensor([3.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(merge("iso_c", torch.zeros(2, 2), [t1, t2]), torch.diag(torch.tensor([2.0, 2.0])))
    # a rotated sum: M = R diag(4, 2) has singular values 4, 2 -> 3 R
    r = torch.stack([rot(30), rot(120)], dim=1)
    m = r @ torch.diag(torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(merge("iso_c", torch.zeros(2, 2), [0.25 * m, 0.75 * m]), 3 * r, atol=1e-6, rtol=1e-5)


def test_iso_cts_common_size_splits_the_rest_evenly_among_tasks() -> None:
    assert common_size(10, 2, 0.8) == 8  # 2 left, 1 per task
    assert common_size(10, 3, 0.8) == 7  # 2 left -> round(2/3)*3 = 3 task-specific
    assert common_size(5, 2, 0.0) == 1  # round(2.5) = 2 (halves to even) -> 4 task-specific
    assert common_size(4, 2, 1.0) == 4


def test_iso_cts_with_only_common_directions_is_iso_c() -> None:
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(6, 4, generator=g) for _ in range(3)]
    base = torch.randn(6, 4, generator=g)
    torch.testing.assert_close(merge("iso_cts", base, deltas, common_space_fraction=1.0),
                               merge("iso_c", base, deltas), atol=1e-5, rtol=1e-5)


def test_iso_cts_keeps_each_tasks_own_direction_outside_the_common_one() -> None:
    # 3x3, two tasks, fraction 0.34: c = 3 - round((3 - 1)/2)*2 = 1 common direction, 1 per task.
    # Sum = diag(5, 1, 1.5): common direction e1 (5); task 1 off e1 is 2·e2e2ᵀ (keeps 2 on e2), task 2 off
    # e1 is -e2e2ᵀ + 1.5·e3e3ᵀ (keeps 1.5 on e3): mean (5 + 2 + 1.5)/3 on the identity.
    # Iso-C flattens the sum's own spectrum instead: (5 + 1.5 + 1)/3.
    e = torch.eye(3)
    t1 = outer(3.0, e[0], e[0]) + outer(2.0, e[1], e[1])
    t2 = outer(2.0, e[0], e[0]) + outer(-1.0, e[1], e[1]) + outer(1.5, e[2], e[2])
    got = merge("iso_cts", torch.zeros(3, 3), [t1, t2], common_space_fraction=0.34)
    torch.testing.assert_close(got, torch.eye(3) * 8.5 / 3, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(merge("iso_c", torch.zeros(3, 3), [t1, t2]), torch.eye(3) * 7.5 / 3)


def test_the_subspace_methods_are_searchable_and_refuse_mergekit_export(family) -> None:
    import pytest

    from evomerge.recipe.mergekit import NotExpressibleError, to_mergekit
    from evomerge.spaces import build_space
    from evomerge.spaces.base import Sources

    base, experts = family
    space = build_space({"kind": "ps", "method": ["tsv_m", "iso_cts"], "search": ["lambda", "common_space_fraction"]},
                        Sources(base=str(base), models=[str(e) for e in experts]))
    assert space.names == ["method", "lambda", "common_space_fraction"]
    recipe = space.decode(space.x0())
    assert recipe.merge_method == "tsv_m" and recipe.parameters == {"lambda": 1.0}
    with pytest.raises(NotExpressibleError, match="'tsv_m' has no mergekit equivalent"):
        to_mergekit(recipe)
