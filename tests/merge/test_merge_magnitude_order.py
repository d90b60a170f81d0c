"""A resident task vector's precomputed magnitude order gives exactly top_k_mask's mask, for any density."""

from __future__ import annotations

import pytest
import torch

from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.merge.methods.sparsify import MagnitudeOrder, kept_count, magnitude_prune, top_k_mask
from evomerge.recipe.model import Recipe


def _tensors():
    gen = torch.Generator().manual_seed(0)
    plain = torch.randn(700, 900, generator=gen)  # above the bracketed path's size: both paths compared
    tied = torch.randn(300_001, generator=gen).bfloat16().float()  # many equal magnitudes
    tied[::7] = 0.0
    tiny = torch.tensor([0.5, -0.5, 0.25, 0.0, 0.5, -1.0])
    return {"plain": plain, "tied": tied, "tiny": tiny}


@pytest.mark.parametrize("name", ["plain", "tied", "tiny"])
def test_the_order_mask_is_top_k_mask_for_every_k(name):
    delta = _tensors()[name]
    order = MagnitudeOrder(delta)
    n = delta.numel()
    ks = sorted({0, 1, 2, n // 3, n // 2, n - 1, n, *(kept_count(n, d) for d in (0.01, 0.1, 0.37, 0.9, 0.999))})
    for k in ks:
        assert torch.equal(order.top_k_mask(delta, k), top_k_mask(delta.abs(), k)), k
    assert order.nbytes == n


def test_magnitude_prune_with_an_order_gives_the_same_tensor():
    delta = _tensors()["tied"]
    order = MagnitudeOrder(delta)
    for density in (0.05, 0.5, 0.8, 1.0):
        for rescale in (None, "l1"):
            assert torch.equal(magnitude_prune(delta, density, rescale, order=order),
                               magnitude_prune(delta, density, rescale)), (density, rescale)


def test_a_resident_worker_builds_the_orders_once_and_reuses_them(family):
    base, experts = family
    resident = ResidentSources.from_paths(list(experts), base)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for density in (0.3, 0.6):
        recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": {"weight": 1.0, "density": density}}
                                                   for e in experts], "base_model": str(base), "merge_method": "ties"})
        materialize_into(model, recipe, resident)
        held = sum(t.numel() for store in resident._tensors.values() for t in store.values())
        assert resident.order_bytes == held  # one byte per task-vector entry, built by the first candidate


def test_orders_are_built_only_while_the_budget_has_room(family):
    base, experts = family
    full = ResidentSources.from_paths(list(experts), base)
    resident = ResidentSources.from_paths(list(experts), base, budget=full.nbytes)  # everything held, no room
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": {"weight": 1.0, "density": 0.5}}
                                               for e in experts], "base_model": str(base), "merge_method": "ties"})
    materialize_into(model, recipe, resident)
    assert not resident.streamed and resident.order_bytes == 0
