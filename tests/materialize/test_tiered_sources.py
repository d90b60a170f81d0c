"""Sources larger than the memory budget: held in part, the rest read from the mapped files, same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evomerge.exec.base import Candidate
from evomerge.exec.worker import EvalWorker
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

RECIPES = {
    "ties": ("ties", {"weight": 1.0, "density": 0.4}),
    "dare_ties": ("dare_ties", {"weight": 0.9, "density": 0.5}),
    "della": ("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.1}),
    "task_arithmetic": ("task_arithmetic", {"weight": 0.6}),
}


def _recipe(family, method: str, params: dict, *, base: bool = True) -> Recipe:
    b, experts = family
    return Recipe.model_validate({"models": [{"model": str(e), "parameters": params} for e in experts],
                                  "base_model": str(b) if base else None, "merge_method": method,
                                  "dtype": "float32", "seed": 7})


def _full_bytes(family, itemsize: int = 4) -> int:
    b, experts = family
    return sum(t.numel() * itemsize for p in (b, *experts) for t in load_file(p / "model.safetensors").values())


@pytest.fixture(scope="module")
def model(family):
    return AutoModelForCausalLM.from_pretrained(family[0], dtype=torch.float32)


@pytest.mark.parametrize("share", [0.0, 0.4])
@pytest.mark.parametrize("key", list(RECIPES))
def test_a_budget_below_the_sources_gives_the_streaming_merge_bit_for_bit(family, model, tmp_path, key, share):
    budget = int(share * _full_bytes(family))
    resident = ResidentSources.from_paths(list(family[1]), family[0], budget=budget)
    tiers = set(resident.tiers.values())
    assert resident.streamed and resident.nbytes <= budget
    assert tiers == ({"files"} if share == 0 else {"device", "files"})
    recipe = _recipe(family, *RECIPES[key])
    merge_to_disk(recipe, tmp_path / "out")
    expected = load_file(tmp_path / "out" / "model.safetensors")
    materialize_into(model, recipe, resident)
    got = model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_bf16_task_vectors_read_from_the_files_are_rounded_as_held_ones_are(family, model):
    recipe = _recipe(family, *RECIPES["ties"])
    held = ResidentSources.from_paths(list(family[1]), family[0], storage_dtype=torch.bfloat16)
    materialize_into(model, recipe, held)
    expected = {n: t.clone() for n, t in model.state_dict().items()}
    streamed = ResidentSources.from_paths(list(family[1]), family[0], storage_dtype=torch.bfloat16,
                                          budget=_full_bytes(family, 2) // 3)
    assert streamed.streamed
    materialize_into(model, recipe, streamed)
    for name, tensor in model.state_dict().items():
        assert torch.equal(expected[name], tensor), name


def test_sources_without_a_base_can_be_streamed_too(family, model, tmp_path):
    recipe = _recipe(family, "linear", {"weight": 0.5}, base=False)
    merge_to_disk(recipe, tmp_path / "out")
    resident = ResidentSources.from_paths(list(family[1]), None, budget=_full_bytes(family) // 4)
    materialize_into(model, recipe, resident)
    expected = load_file(tmp_path / "out" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(expected[name], tensor), name


def test_a_worker_with_a_small_source_memory_scores_as_a_fully_resident_one(family):
    base, experts = family
    recipe = _recipe(family, *RECIPES["dare_ties"])
    cand = Candidate(key="c", recipe=recipe, genome=np.zeros(1))
    small = EvalWorker(str(base), [str(e) for e in experts], [], source_memory="16KiB")
    full = EvalWorker(str(base), [str(e) for e in experts], [], source_memory=None)
    assert small.resident.streamed and small.resident.nbytes <= 16 * 1024 and not full.resident.streamed
    assert small.evaluate(cand).status == full.evaluate(cand).status == "ok"
    for (name, a), b in zip(small.model.state_dict().items(), full.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
