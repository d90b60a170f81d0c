"""The Recipe schema: mergekit configs load unchanged, JSON round-trips exactly, errors name the key."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from evomerge.recipe.model import Recipe

MERGEKIT_TIES = textwrap.dedent("""
    models:
      - model: psmathur/orca_mini_v3_13b
        parameters:
          density: [1, 0.7, 0.1] # density gradient
          weight: 1.0
      - model: garage-bAInd/Platypus2-13B
        parameters:
          density: 0.5
          weight: [0, 0.3, 0.7, 1] # weight gradient
      - model: WizardLM/WizardMath-13B-V1.0
        parameters:
          density: 0.33
          weight:
            - filter: mlp
              value: 0.5
            - value: 0
    merge_method: ties
    base_model: TheBloke/Llama-2-13B-fp16
    parameters:
      normalize: true
      int8_mask: true
    dtype: float16
""")


def test_mergekit_ties_example_loads_as_a_recipe(tmp_path):
    path = tmp_path / "ties.yml"
    path.write_text(MERGEKIT_TIES)
    recipe = Recipe.load(path)
    assert recipe.merge_method == "ties"
    assert recipe.models[1].parameters["weight"] == [0, 0.3, 0.7, 1]
    assert recipe.models[2].parameters["weight"][0].filter == "mlp"
    assert recipe.referenced_models()[0] == "TheBloke/Llama-2-13B-fp16"


def test_recipe_json_round_trip_is_exact(tmp_path):
    path = tmp_path / "ties.yml"
    path.write_text(MERGEKIT_TIES)
    recipe = Recipe.load(path)
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    assert again.to_json() == recipe.to_json()


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=2),
    densities=st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=2),
    gradient=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=6),
    seed=st.integers(0, 2**31),
)
def test_any_recipe_round_trips_through_json_bit_for_bit(weights, densities, gradient, seed):
    recipe = Recipe.model_validate({
        "models": [{"model": f"m{i}", "parameters": {"weight": w, "density": d}}
                   for i, (w, d) in enumerate(zip(weights, densities, strict=True))],
        "base_model": "base",
        "merge_method": "dare_ties",
        "parameters": {"lambda": gradient},
        "seed": seed,
        "groups": [{"filter": "embed", "merge_method": "linear", "parameters": {"weight": weights[0]}}],
    })
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("models: [\n  - model: a\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: malformed YAML"):
        Recipe.load(path)


def test_unknown_method_is_named_with_the_known_ones(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("models: [{model: a}]\nmerge_method: tiez\n")
    with pytest.raises(ConfigError, match=r"(?s)r\.yml.*merge_method.*unknown merge method 'tiez'.*ties"):
        Recipe.load(path)


def test_empty_model_list_is_refused(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("models: []\nmerge_method: linear\n")
    with pytest.raises(ConfigError, match="'models' is empty"):
        Recipe.load(path)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("models: [{model: a}]\nmerge_method: linear\nmerge_methd: ties\n")
    with pytest.raises(ConfigError, match="merge_methd"):
        Recipe.load(path)


def test_unsupported_mergekit_features_are_refused_by_name():
    with pytest.raises(ConfigError, match="'modules'.*does not support"):
        Recipe.from_dict({"modules": {"text": {}}, "merge_method": "linear"})
    with pytest.raises(ConfigError, match="not both"):
        Recipe.from_dict({"models": [{"model": "a"}], "merge_method": "linear", "tokenizer_source": "union",
                          "tokenizer": {"source": "base"}})
    with pytest.raises(ConfigError, match="chat_template 'chatmlx'"):
        Recipe.from_dict({"models": [{"model": "a"}], "merge_method": "linear", "chat_template": "chatmlx"})
    with pytest.raises(ConfigError, match="tokenizer.tokens.*token_id"):
        Recipe.from_dict({"models": [{"model": "a"}], "merge_method": "linear", "tokenizer": {
            "tokens": {"<x>": {"source": {"kind": "model_token", "model": "a", "token": "a", "token_id": 1}}}}})


def test_slices_of_unequal_length_are_refused():
    with pytest.raises(ConfigError, match="same number of layers"):
        Recipe.from_dict({"slices": [{"sources": [{"model": "a", "layer_range": [0, 2]},
                                                  {"model": "b", "layer_range": [0, 3]}]}],
                          "merge_method": "slerp", "base_model": "a", "parameters": {"t": 0.5}})


def test_recipe_needs_models_or_slices_not_both():
    with pytest.raises(ConfigError, match="exactly one of 'models' or 'slices'"):
        Recipe.from_dict({"merge_method": "linear"})
