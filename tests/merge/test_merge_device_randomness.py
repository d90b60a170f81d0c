"""Randomised methods draw the same masks whatever device merges: CPU draws from (recipe seed, tensor, source)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evomerge.exec.base import Candidate
from evomerge.exec.worker import EvalWorker
from evomerge.materialize.plan import derive_seed
from evomerge.materialize.streaming import merge_to_disk
from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.sparsify import della_magprune, l1_norm, per_source_generators, random_drop
from evomerge.merge.registry import get_method
from evomerge.recipe.model import Recipe


def cuda(test):
    """``-m cuda`` selects the GPU checks; without a CUDA device they are skipped."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))

RANDOMISED = {
    "dare_linear": {"weight": 0.6, "density": 0.5},
    "dare_ties": {"weight": 0.9, "density": 0.4},
    "della": {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
    "della_linear": {"weight": 0.7, "density": 0.6, "epsilon": 0.2},
}


def test_a_dare_mask_is_a_cpu_draw_from_the_recipe_seed_the_tensor_name_and_the_source_index():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, generator=gen)
    deltas = [torch.randn(64, 48, generator=gen) for _ in range(3)]
    seed = derive_seed(7, "model.layers.0.mlp.up_proj.weight")
    merged = get_method("dare_linear")(MergeInputs("t", base, deltas=deltas),
                                       {"weight": 1.0, "density": 0.5, "rescale": False}, seed=seed)
    # by hand: per-source CPU generators seeded from the tensor's seed, U[0,1) < density keeps an entry
    subs = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(seed)).tolist()
    expected = base.clone()
    for delta, sub in zip(deltas, subs, strict=True):
        keep = torch.rand(delta.shape, generator=torch.Generator().manual_seed(sub)) < 0.5
        expected += delta * keep
    torch.testing.assert_close(merged, expected, rtol=1e-6, atol=1e-6)


def test_l1_norm_is_accurate_where_a_float32_norm_drifts():
    x = torch.randn(3_000_001, generator=torch.Generator().manual_seed(1))
    exact = float(x.double().abs().sum())
    assert abs(l1_norm(x) - exact) / exact < 1e-9
    assert abs(l1_norm(x[:100]) - float(x[:100].double().abs().sum())) < 1e-9


@pytest.fixture(scope="module")
def worker_and_family(family):
    base, experts = family
    # the search's settings: a worker with its own threads, resident float32 sources, a float32 instance
    return EvalWorker(str(base), [str(e) for e in experts], [], threads=2, model_dtype="float32"), family


@pytest.mark.parametrize("method", list(RANDOMISED))
def test_the_search_worker_and_the_export_give_bit_identical_randomised_merges(worker_and_family, tmp_path, method):
    worker, (base, experts) = worker_and_family
    recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": RANDOMISED[method]} for e in experts],
                                    "base_model": str(base), "merge_method": method, "seed": 19})
    assert worker.evaluate(Candidate(key="c", recipe=recipe, genome=np.zeros(1))).status == "ok"
    torch.set_num_threads(1)  # the export as `evomerge export` runs it: default threads
    merge_to_disk(recipe, tmp_path / "out")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    scored = worker.model.state_dict()
    for name, tensor in exported.items():
        assert torch.equal(scored[name], tensor), name


@cuda
@pytest.mark.parametrize("drop", ["dare", "della"])
def test_cpu_and_cuda_draw_the_same_masks(drop):
    delta = torch.randn(512, 384, generator=torch.Generator().manual_seed(3))

    def sparsify(x: torch.Tensor) -> torch.Tensor:
        gen = per_source_generators(torch.Generator().manual_seed(derive_seed(5, "w")), 1)[0]
        if drop == "dare":
            return random_drop(x, 0.3, gen)
        return della_magprune(x, 0.4, 0.15, gen)

    on_cpu, on_cuda = sparsify(delta), sparsify(delta.cuda()).cpu()
    assert torch.equal(on_cpu == 0, on_cuda == 0)  # the same entries kept
    torch.testing.assert_close(on_cuda, on_cpu, rtol=2e-7, atol=0)  # the L1 rescale agrees to float32 rounding


@cuda
@pytest.mark.parametrize("method", list(RANDOMISED))
def test_a_recipe_merged_on_cuda_matches_its_cpu_merge(method):
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(256, 128, generator=gen)
    deltas = [0.01 * torch.randn(256, 128, generator=gen) for _ in range(3)]
    fn = get_method(method)
    on_cpu = fn(MergeInputs("t", base, deltas=deltas), RANDOMISED[method], seed=11)
    on_cuda = fn(MergeInputs("t", base.cuda(), deltas=[d.cuda() for d in deltas]), RANDOMISED[method], seed=11)
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-6, atol=1e-7)
