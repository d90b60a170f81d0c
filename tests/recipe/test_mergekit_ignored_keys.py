"""Keys mergekit 0.1.5 accepts and ignores are accepted, kept in the recipe, and named in one warning each.

mergekit facts (0.1.5): a method reads only the parameters it declares (``parameter_resolver.py``), so
``weight`` on ``model_stock`` or a per-model ``weight`` on ``sce`` changes nothing; its configuration
models ignore keys they do not declare, so a top-level ``select_topk`` and a slice source's ``revision``
change nothing either. evomerge accepts each with a warning; a key no mergekit method knows stays an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evomerge.errors import ConfigError, IgnoredKeyWarning
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.mergekit import to_mergekit
from evomerge.recipe.model import Recipe

REPO = Path(__file__).resolve().parents[2]


def load(config: dict) -> tuple[Recipe, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe = Recipe.from_dict(config)
    return recipe, [str(w.message) for w in caught if issubclass(w.category, IgnoredKeyWarning)]


def merged(recipe: Recipe, out: Path) -> dict[str, torch.Tensor]:
    merge_to_disk(recipe, out)
    return load_file(out / "model.safetensors")


def test_weight_on_model_stock_is_accepted_warned_once_and_changes_no_tensor(family, tmp_path: Path) -> None:
    base, experts = family
    plain = {"models": [{"model": str(e)} for e in experts], "base_model": str(base), "merge_method": "model_stock"}
    weighted = {**plain, "models": [{"model": str(e), "parameters": {"weight": w}}
                                    for e, w in zip(experts, (0.2, 0.5, 0.9), strict=True)]}
    recipe, said = load(weighted)
    assert said == ["'weight' on model_stock has no effect (mergekit ignores it too) "
                    "(models[0].parameters, models[1].parameters, models[2].parameters)"]
    ours, reference = merged(recipe, tmp_path / "weighted"), merged(Recipe.from_dict(plain), tmp_path / "plain")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    assert [m.parameters for m in recipe.models or []] == [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.9}]


def test_sce_with_per_model_weight_and_a_top_level_select_topk_merges_as_without_them(family, tmp_path) -> None:
    base, experts = family
    plain = {"models": [{"model": str(e)} for e in experts[:2]], "base_model": str(base), "merge_method": "sce"}
    noisy = {**plain, "models": [{"model": str(e), "parameters": {"weight": 0.3}} for e in experts[:2]],
             "select_topk": 0.15}
    recipe, said = load(noisy)
    assert said == ["'select_topk' on sce has no effect (mergekit ignores it too) (top level)",
                    "'weight' on sce has no effect (mergekit ignores it too) "
                    "(models[0].parameters, models[1].parameters)"]
    ours, reference = merged(recipe, tmp_path / "noisy"), merged(Recipe.from_dict(plain), tmp_path / "plain")
    assert all(torch.equal(ours[k], reference[k]) for k in reference)  # select_topk stays 1 (no selection)
    # recorded: it round-trips through evomerge's recipe and into the mergekit YAML, at the top level
    assert recipe.to_dict()["select_topk"] == 0.15
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())).to_dict() == recipe.to_dict()
    exported = to_mergekit(recipe).config
    assert exported["select_topk"] == 0.15 and exported["models"][0]["parameters"] == {"weight": 0.3}


def test_a_slice_sources_revision_is_recorded_and_warned(family, tmp_path: Path) -> None:
    base, _ = family
    recipe, said = load({"slices": [{"sources": [{"model": str(base), "layer_range": [0, 2], "revision": "v1"}]}],
                         "merge_method": "passthrough"})
    assert said == ["'revision' on passthrough has no effect (mergekit ignores it too) (slices[0].sources[0])"]
    assert to_mergekit(recipe).config["slices"][0]["sources"][0]["revision"] == "v1"
    ours = merged(recipe, tmp_path / "out")
    assert all(torch.equal(t, load_file(base / "model.safetensors")[k]) for k, t in ours.items())


@pytest.mark.parametrize(("config", "key"), [
    ({"dype": "float32"}, "dype"),  # a typo mergekit also ignores: no mergekit setting has that name
    ({"models": "P", "parameters": {"dnesity": 0.5}}, "dnesity"),
])
def test_a_key_no_mergekit_method_knows_stays_an_error_naming_it(family, config: dict, key: str) -> None:
    base, experts = family
    data = {"models": [{"model": str(experts[0]), "parameters": {"weight": 1.0}}], "base_model": str(base),
            "merge_method": "ties", **config}
    if data["models"] == "P":
        data["models"] = [{"model": str(experts[0]), "parameters": {"weight": 1.0, **config["parameters"]}}]
        data.pop("parameters")
    with pytest.raises(ConfigError, match=key):
        merge_to_disk(Recipe.from_dict(data), base.parent / "never")
    assert not (base.parent / "never").exists()


def test_the_cli_prints_one_warning_line_per_ignored_key_and_methods_says_so(family, tmp_path: Path) -> None:
    base, experts = family
    config = tmp_path / "stock.yml"
    config.write_text(yaml.safe_dump({"models": [{"model": str(e), "parameters": {"weight": 0.5}} for e in experts],
                                      "base_model": str(base), "merge_method": "model_stock"}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "evomerge", "recipe", "export", str(config)], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert lines == ["warning: 'weight' on model_stock has no effect (mergekit ignores it too) (models[0].parameters, "
                     "models[1].parameters, models[2].parameters)"]
    assert yaml.safe_load(res.stdout)["models"][0]["parameters"] == {"weight": 0.5}
    listing = subprocess.run([sys.executable, "-m", "evomerge", "methods"], capture_output=True, text=True, env=env,
                             timeout=120, check=True).stdout
    assert "has no effect (mergekit ignores it too)" in " ".join(listing.split())


def test_the_set_aside_keys_cannot_smuggle_in_other_keys(family) -> None:
    base, experts = family
    data = {"models": [{"model": str(experts[0]), "parameters": {"weight": 1.0}}], "base_model": str(base),
            "merge_method": "ties"}
    with pytest.raises(ConfigError, match="'dype' is not a top-level key mergekit ignores"):
        Recipe.from_dict({**data, "ignored_keys": {"dype": "float32"}})
    with pytest.raises(ConfigError, match="'seed' is not a top-level key mergekit ignores"):
        Recipe.from_dict({**data, "ignored_keys": {"seed": 3}})
