"""The in-place path writes exactly the weights the streaming path writes, into a live model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evomerge.errors import MergeError
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

RECIPES = {
    "ties": ("ties", {"weight": 1.0, "density": 0.4}, {}),
    "dare_ties": ("dare_ties", {"weight": 0.9, "density": 0.5}, {}),
    "dare_linear": ("dare_linear", {"weight": 0.5, "density": 0.7}, {}),
    "task_arithmetic": ("task_arithmetic", {"weight": [0.2, 1.3]}, {}),
    "breadcrumbs_ties": ("breadcrumbs_ties", {"weight": 1.0, "density": 0.8, "gamma": 0.05}, {}),
    "della": ("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.1}, {}),
    "model_stock": ("model_stock", {}, {}),
    # the base_model joins a linear merge as one more input, as in mergekit (the global weight is its weight)
    "linear": ("linear", {"weight": 1.0}, {"weight": 0.5}),
    "sce": ("sce", {}, {"select_topk": 0.5}),
    "nuslerp": ("nuslerp", {"weight": (0.3, 0.7)}, {}),
    "nuslerp_rows": ("nuslerp", {"weight": (0.6, 0.4)}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}),
    "multislerp": ("multislerp", {"weight": (0.2, 0.5, 0.3)}, {}),
    "karcher": ("karcher", {}, {"max_iter": 20}),
    "arcee_fusion": ("arcee_fusion", {}, {}),
    "nearswap": ("nearswap", {}, {"t": 0.001}),
    "ram": ("ram", {}, {"epsilon": 1e-3}),
    "ramplus_tl": ("ramplus_tl", {}, {"epsilon": 1e-3, "r": 0.5, "alpha": 0.5}),
    "tsv_m": ("tsv_m", {}, {"lambda": 0.9}),
    "iso_c": ("iso_c", {}, {"lambda": 1.3}),
    "iso_cts": ("iso_cts", {}, {"lambda": 1.3, "common_space_fraction": 0.6}),
}
# methods that take exactly this many models besides the base
_N_MODELS = {"nuslerp": 2, "nuslerp_rows": 2, "arcee_fusion": 1, "nearswap": 1}


def _recipe(family, method: str, params: dict, globals_: dict, n_models: int = 3) -> Recipe:
    base, experts = family
    # a tuple gives one value per model (a list is a gradient over the layers)
    per_model = [{k: v[i] if isinstance(v, tuple) else v for k, v in params.items()} for i in range(n_models)]
    return Recipe.model_validate({
        "models": [{"model": str(e), "parameters": p or None} for e, p in zip(experts, per_model, strict=False)],
        "base_model": str(base), "merge_method": method, "parameters": globals_ or None,
        "dtype": "float32", "seed": 11,
    })


@pytest.fixture(scope="module")
def resident(family) -> ResidentSources:
    base, experts = family
    return ResidentSources.from_paths(list(experts), base)


@pytest.fixture(scope="module")
def model(family):
    base, _ = family
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


@pytest.mark.parametrize("key", list(RECIPES))
def test_in_place_merge_equals_streaming_merge_bit_for_bit(family, resident, model, tmp_path, key):
    recipe = _recipe(family, *RECIPES[key], n_models=_N_MODELS.get(key, 3))
    merge_to_disk(recipe, tmp_path / "out")
    expected = load_file(tmp_path / "out" / "model.safetensors")
    materialize_into(model, recipe, resident)
    got = model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_in_place_merge_reuses_the_same_parameter_storage(family, resident, model):
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    materialize_into(model, _recipe(family, *RECIPES["ties"]), resident)
    assert before == {n: p.data_ptr() for n, p in model.named_parameters()}


def test_in_place_logits_equal_the_reloaded_streaming_merge(family, resident, model, tmp_path):
    recipe = _recipe(family, *RECIPES["dare_ties"])
    merge_to_disk(recipe, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    materialize_into(model, recipe, resident)
    ids = torch.arange(10).reshape(1, 10)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_resident_sources_hold_the_base_once_and_task_vectors(family, resident):
    base, experts = family
    one_model = sum(t.numel() * 4 for t in load_file(Path(base) / "model.safetensors").values())
    assert resident.nbytes == one_model * (1 + len(experts))


def test_a_recipe_with_another_base_is_refused(family, resident, model):
    _base, experts = family
    recipe = Recipe.model_validate({"models": [{"model": str(experts[1]), "parameters": {"weight": 1.0}}],
                                    "base_model": str(experts[0]), "merge_method": "task_arithmetic"})
    with pytest.raises(MergeError, match="not the resident base"):
        materialize_into(model, recipe, resident)
