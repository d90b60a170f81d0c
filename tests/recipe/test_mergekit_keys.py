"""Every parameter key mergekit 0.1.5 accepts for a shared method is accepted, with mergekit's meaning.

mergekit facts checked here (``merge_methods/generalized_task_arithmetic.py``, ``parameter_resolver.py``):
every task-vector method declares ``int8_mask`` (the dtype of its sign mask: a memory option, the mask
compares equal either way); ``task_arithmetic`` declares ``density`` and ``rescale`` but has no
sparsifier, so they change nothing; values are validated by pydantic's lax mode, so ``"1e-3"`` (which
YAML reads as a string), ``1``/``"yes"`` for booleans and ``true`` for numbers are accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evomerge.errors import ConfigError, MergeError
from evomerge.materialize.streaming import merge_to_disk
from evomerge.merge.base import ParamSpec
from evomerge.merge.registry import get_method
from evomerge.recipe.mergekit import to_mergekit
from evomerge.recipe.model import Recipe

TASK_VECTOR_METHODS = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                       "breadcrumbs_ties", "della", "della_linear"]


def _merge(tmp_path: Path, text: str, family) -> dict:
    base, experts = family
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(text.format(base=base, e0=experts[0], e1=experts[1]))
    out = tmp_path / path.stem
    merge_to_disk(Recipe.load(path), out)
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("name", TASK_VECTOR_METHODS)
def test_every_task_vector_method_takes_int8_mask_like_mergekit(name: str) -> None:
    spec = get_method(name).param("int8_mask")
    assert (spec.scope, spec.default, spec.kind, spec.inert) == ("global", False, "bool", True)


def test_mergekits_readme_ties_config_merges_and_int8_mask_changes_nothing(family, tmp_path: Path) -> None:
    config = """
models:
  - model: {e0}
    parameters: {{density: 0.5, weight: 0.7}}
  - model: {e1}
    parameters: {{density: 0.5, weight: 0.5}}
merge_method: ties
base_model: {base}
parameters:
  normalize: true
  int8_mask: {flag}
dtype: float32
"""
    with_mask = _merge(tmp_path / "a", config.replace("{flag}", "true"), family)
    without = _merge(tmp_path / "b", config.replace("{flag}", "false"), family)
    assert with_mask.keys() == without.keys()
    for key, tensor in with_mask.items():
        assert tensor.equal(without[key]), key


def test_int8_mask_is_kept_in_the_recipe_and_its_mergekit_export(family) -> None:
    base, experts = family
    recipe = Recipe.from_dict({"models": [{"model": str(experts[0]), "parameters": {"weight": 1.0}}],
                               "base_model": str(base), "merge_method": "ties",
                               "parameters": {"int8_mask": True}})
    exported = yaml.safe_load(to_mergekit(recipe).to_yaml())
    assert exported["parameters"]["int8_mask"] is True


def test_task_arithmetic_accepts_density_and_rescale_and_ignores_them_as_mergekit_does(family, tmp_path) -> None:
    config = """
models:
  - model: {e0}
    parameters: {{weight: 0.6 EXTRA}}
  - model: {e1}
    parameters: {{weight: 0.4 EXTRA}}
merge_method: task_arithmetic
base_model: {base}
dtype: float32
"""
    plain = _merge(tmp_path / "a", config.replace(" EXTRA", ""), family)
    extra = _merge(tmp_path / "b", config.replace(" EXTRA", ", density: 0.3, rescale: true"), family)
    for key, tensor in plain.items():
        assert tensor.equal(extra[key]), key


def test_yaml_strings_and_loose_booleans_read_as_mergekit_reads_them(family, tmp_path: Path) -> None:
    # PyYAML reads 1e-1 (no dot) as a string; mergekit's pydantic turns it into 0.1; normalize: 1 is true
    loose = """
models:
  - model: {e0}
    parameters: {{weight: "0.7", density: 5e-1}}
  - model: {e1}
    parameters: {{weight: 0.5, density: "0.5"}}
merge_method: ties
base_model: {base}
parameters: {{normalize: 1, int8_mask: "yes", lambda: 1e0}}
dtype: float32
"""
    strict = """
models:
  - model: {e0}
    parameters: {{weight: 0.7, density: 0.5}}
  - model: {e1}
    parameters: {{weight: 0.5, density: 0.5}}
merge_method: ties
base_model: {base}
parameters: {{normalize: true, int8_mask: true, lambda: 1.0}}
dtype: float32
"""
    a, b = _merge(tmp_path / "a", loose, family), _merge(tmp_path / "b", strict, family)
    for key, tensor in a.items():
        assert tensor.equal(b[key]), key


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("bool", 1, True), ("bool", 0.0, False), ("bool", "Off", False), ("bool", "t", True),
    ("float", "1e-3", 0.001), ("float", True, 1.0), ("float", " 0.5", 0.5), ("int", 3.0, 3), ("int", "10", 10),
])
def test_parameter_values_coerce_like_pydantic_lax_mode(kind: str, value: object, expected: object) -> None:
    got = ParamSpec("p", "global", kind=kind).check(value, where="here")  # type: ignore[arg-type]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("kind", "value"), [("bool", 2), ("bool", "maybe"), ("float", "half"), ("int", 3.5)])
def test_values_mergekit_refuses_are_refused_naming_the_parameter(kind: str, value: object) -> None:
    with pytest.raises(MergeError, match="parameter 'p'"):
        ParamSpec("p", "global", kind=kind).check(value, where="here")  # type: ignore[arg-type]


def test_an_unknown_parameter_key_is_still_an_error_naming_it(family, tmp_path: Path) -> None:
    config = """
models:
  - model: {e0}
    parameters: {{weight: 1.0, densty: 0.5}}
merge_method: ties
base_model: {base}
"""
    with pytest.raises(ConfigError, match="'densty' is not a parameter of ties"):
        _merge(tmp_path, config, family)


def test_a_search_space_never_searches_a_parameter_without_effect(family) -> None:
    from evomerge.errors import ConfigError as SpaceError
    from evomerge.spaces import build_space
    from evomerge.spaces.base import Sources

    base, experts = family
    sources = Sources(base=str(base), models=[str(e) for e in experts[:2]])
    alone = build_space({"kind": "ps", "method": "task_arithmetic"}, sources)
    assert alone.searched == ["weight"]
    both = build_space({"kind": "ps", "method": ["task_arithmetic", "ties"]}, sources)
    assert both.searched == ["weight", "density"]  # ties' density, which task_arithmetic leaves out
    recipe = both.decode(both.x0())  # the first method: density is not written into its recipe
    assert recipe.merge_method == "task_arithmetic"
    assert all("density" not in (m.parameters or {}) for m in recipe.models or [])
    with pytest.raises(SpaceError, match="'int8_mask' changes nothing numerically"):
        build_space({"kind": "ps", "method": "ties", "search": ["int8_mask"]}, sources)


def test_export_warns_when_a_gradient_reaches_the_head_where_mergekit_versions_disagree(family) -> None:
    base, experts = family

    def warnings(density) -> list[str]:
        recipe = Recipe.from_dict({"models": [{"model": str(experts[0]), "parameters": {"weight": 1.0,
                                                                                       "density": density}}],
                                   "base_model": str(base), "merge_method": "ties"})
        return to_mergekit(recipe).warnings

    said = "evomerge evaluates it there at t = 0 (its first value), as mergekit 0.1.5 does; mergekit before 0.1.5"
    assert any(said in w for w in warnings([0.3, 0.9]))
    assert any(said in w for w in warnings([{"filter": "mlp", "value": 0.5}, {"value": [0.3, 0.9]}]))
    assert warnings([{"filter": "layers.", "value": [0.3, 0.9]}, {"value": 0.3}]) == []
    assert warnings([0.5, 0.5]) == [] and warnings(0.4) == []


def test_a_torch_prefixed_dtype_is_read_as_mergekit_reads_it(family, tmp_path: Path) -> None:
    config = """
models:
  - model: {e0}
    parameters: {{weight: 1.0}}
merge_method: task_arithmetic
base_model: {base}
dtype: torch.bfloat16
"""
    got = _merge(tmp_path, config, family)
    assert {t.dtype for t in got.values()} == {torch.bfloat16}


NEW_METHOD_RECIPES = {
    "sce": ({}, {"select_topk": 0.5, "int8_mask": True}, 3),
    "nuslerp": ({"weight": 0.5}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}, 2),
    "multislerp": ({"weight": 0.3}, {"normalize_weights": False, "eps": 1e-7}, 3),
    "karcher": ({}, {"max_iter": 5, "tol": 1e-6}, 3),
    "arcee_fusion": ({}, None, 1),
    "nearswap": ({}, {"t": 0.001}, 1),
    "ram": ({}, {"epsilon": 1e-4}, 3),
    "ramplus_tl": ({}, {"r": 0.2, "alpha": 0.3, "epsilon": 1e-4}, 3),
}


@pytest.mark.parametrize("name", sorted(NEW_METHOD_RECIPES))
def test_new_methods_export_to_mergekit_yaml_and_reload_as_the_same_recipe(family, tmp_path: Path, name: str) -> None:
    base, experts = family
    per_model, params, n = NEW_METHOD_RECIPES[name]
    recipe = Recipe.from_dict({"models": [{"model": str(e), **({"parameters": per_model} if per_model else {})}
                                          for e in experts[:n]],
                               "base_model": None if name == "karcher" else str(base), "merge_method": name,
                               "parameters": params, "dtype": "float32"})
    exported = to_mergekit(recipe)
    assert exported.config["merge_method"] == name and not exported.warnings
    path = tmp_path / "mk.yaml"
    path.write_text(exported.to_yaml())
    again = Recipe.load(path)
    assert again.to_dict() == {**recipe.to_dict(), "seed": 0}
