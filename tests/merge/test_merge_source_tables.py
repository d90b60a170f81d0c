"""Source-only tables (breadcrumbs' magnitude band, DELLA's row ranks, DARE's norm) give the plain results bit for bit,
and a resident worker builds each once and reuses it for every candidate's densities."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evomerge.errors import MergeError
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.merge.methods.sparsify import (
    MagnitudeOrder,
    RowRanks,
    SourceNorm,
    della_keep_probabilities,
    della_magprune,
    l1_norm,
    magnitude_outliers,
    random_drop,
    rank_band_mask,
)
from evomerge.recipe.model import Recipe


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    tied = torch.randn(600, 700, generator=gen).bfloat16().float()  # many equal magnitudes, bracketed path
    tied[::5] = 0.0
    return {"plain": torch.randn(300, 400, generator=gen), "tied": tied,
            "vector": torch.randn(5000, generator=gen).bfloat16().float(),
            "tiny": torch.tensor([0.5, -0.5, 0.25, 0.0, 0.5, -1.0])}


@pytest.mark.parametrize("name", ["plain", "tied", "vector", "tiny"])
def test_the_order_band_is_rank_band_mask(name):
    delta = _tensors()[name]
    order, n = MagnitudeOrder(delta), delta.numel()
    for n_bottom, n_top in [(0, 0), (0, 1), (n // 10, n // 100), (n // 2, n // 3), (n - 1, 0), (1, n - 1),
                            (n // 3, 0)]:
        expected = rank_band_mask(delta.abs(), n_bottom, n_top)
        assert torch.equal(order.band_mask(delta, n_bottom, n_top), expected), (n_bottom, n_top)


@pytest.mark.parametrize("name", ["plain", "tied", "tiny"])
def test_breadcrumbs_with_an_order_gives_the_same_tensor(name):
    delta = _tensors()[name]
    order = MagnitudeOrder(delta)
    for density, gamma in [(0.9, 0.01), (0.5, 0.1), (0.99, 0.05), (0.3, 0.0), (1.0, 0.2)]:
        for rescale in (None, "l1"):
            assert torch.equal(magnitude_outliers(delta, density, gamma, rescale, order=order),
                               magnitude_outliers(delta, density, gamma, rescale)), (density, gamma, rescale)


def _della_shapes() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    tied = torch.randn(64, 300, generator=gen).bfloat16().float()
    tied[:, ::4] = 0.0
    return {"matrix": torch.randn(48, 200, generator=gen), "tied": tied,
            "vector": torch.randn(777, generator=gen), "one": torch.tensor([0.3]),
            "cube": torch.randn(4, 6, 5, generator=gen),
            "wide": torch.randn(2, 40_000, generator=gen)}  # rows over 32,768 entries: int32 ranks


@pytest.mark.parametrize("name", list(_della_shapes()))
def test_row_ranks_give_della_keep_probabilities_bit_for_bit(name):
    delta = _della_shapes()[name]
    ranks = RowRanks(delta)
    for density, epsilon in [(0.5, 0.1), (0.3, 0.29), (0.81, 0.05)]:
        assert torch.equal(ranks.keep_probabilities(delta, density, epsilon),
                           della_keep_probabilities(delta, density, epsilon)), (density, epsilon)
    if name == "wide":
        assert ranks.ranks is not None and ranks.ranks.dtype == torch.int32
    elif name == "matrix":
        assert ranks.ranks is not None and ranks.ranks.dtype == torch.int16 and ranks.nbytes == 2 * delta.numel()
    assert ranks.nbytes == RowRanks.planned_nbytes(tuple(delta.shape))


@pytest.mark.parametrize("rescale", ["l1", "inverse_keep_prob", None])
def test_della_and_dare_with_tables_draw_and_rescale_the_same(rescale):
    delta = _della_shapes()["tied"]
    ranks, norm = RowRanks(delta), SourceNorm(delta)
    for density in (0.2, 0.6):
        def gen() -> torch.Generator:
            return torch.Generator().manual_seed(17)

        assert torch.equal(della_magprune(delta, density, 0.15, gen(), rescale, ranks=ranks),
                           della_magprune(delta, density, 0.15, gen(), rescale))
        assert torch.equal(random_drop(delta, density, gen(), rescale, table=norm),
                           random_drop(delta, density, gen(), rescale))
    assert norm.l1(delta) == l1_norm(delta)


def test_a_table_given_another_tensor_is_refused():
    delta = _tensors()["plain"]
    with pytest.raises(MergeError, match="another tensor"):
        MagnitudeOrder(delta).band_mask(delta[:10], 1, 1)
    with pytest.raises(MergeError, match="another tensor"):
        RowRanks(delta).keep_probabilities(delta[:, :5], 0.5, 0.1)
    with pytest.raises(MergeError, match="another tensor"):  # same size, other rows: other ranks
        RowRanks(delta).keep_probabilities(delta.reshape(400, 300), 0.5, 0.1)


@pytest.mark.parametrize("method,params", [
    ("breadcrumbs", {"weight": 0.8, "gamma": 0.05}),
    ("breadcrumbs_ties", {"weight": 1.0, "gamma": 0.02, "rescale": True}),
    ("della_linear", {"weight": 0.7, "epsilon": 0.1}),
    ("della", {"weight": 1.0, "epsilon": 0.05}),
    ("dare_linear", {"weight": 0.6}),
])
def test_a_resident_worker_reuses_its_tables_across_densities_bit_for_bit(family, tmp_path, method, params):
    base, experts = family
    resident = ResidentSources.from_paths(list(experts), base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    held = sum(t.numel() for store in resident._tensors.values() for t in store.values())
    for i, density in enumerate((0.5, 0.7, 0.3)):
        recipe = Recipe.model_validate({
            "models": [{"model": str(e), "parameters": {**params, "density": density + 0.05 * k}}
                       for k, e in enumerate(experts)],
            "base_model": str(base), "merge_method": method, "dtype": "float32", "seed": i})
        materialize_into(model, recipe, resident)
        merge_to_disk(recipe, tmp_path / f"out{i}")
        expected = load_file(tmp_path / f"out{i}" / "model.safetensors")
        got = model.state_dict()
        for name, tensor in expected.items():
            assert torch.equal(got[name], tensor), (density, name)
        if i == 0:
            tables = dict(resident._orders)
            per_entry = {"breadcrumbs": 1, "breadcrumbs_ties": 1, "della": 2, "della_linear": 2}.get(method, 0)
            assert resident.order_bytes == per_entry * held  # the family's rows are short: int16 ranks
        assert resident._orders == tables  # built by the first candidate, never again


@pytest.mark.parametrize("weights", [(1.0, -1.0, 0.5), (0.7, 0.7), (1.0, -1.0), (2.0,)])
def test_the_disjoint_mean_is_the_textbook_formula_bit_for_bit(weights):
    from evomerge.merge.methods.consensus import agreement, disjoint_merge, elect_sign

    gen = torch.Generator().manual_seed(len(weights))
    taus = [torch.randn(4000, generator=gen).round_(decimals=1) for _ in weights]  # zeros and exact cancellations
    weighted = [t * w for t, w in zip(taus, weights, strict=True)]
    positive = elect_sign(weighted)
    agree = [agreement(wt, positive) for wt in weighted]
    total = sum(torch.where(a, wt, 0.0) for a, wt in zip(agree, weighted, strict=True))
    divisor = sum(a.float() * w for a, w in zip(agree, weights, strict=True))
    expected = total / divisor.masked_fill(divisor == 0, 1.0)
    got = disjoint_merge([w.clone() for w in weighted], weights, normalize=True)
    assert torch.equal(got, expected)
    assert (divisor == 0).any()  # the no-agreement (or cancelling-weights) entries are exercised
