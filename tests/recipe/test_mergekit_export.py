"""Export to mergekit YAML: exact where mergekit can express the recipe, a reasoned refusal where not."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.recipe.mergekit import NotExpressibleError, to_mergekit
from evomerge.recipe.model import Recipe

TIES = {
    "models": [{"model": "a", "parameters": {"weight": [0.0, 1.0], "density": [{"filter": "mlp", "value": 0.3},
                                                                            {"value": 0.7}]}},
               {"model": "b", "parameters": {"weight": 0.5, "density": 0.5}}],
    "base_model": "base", "merge_method": "ties", "parameters": {"normalize": True, "lambda": [1.0, 1.5]},
    "dtype": "bfloat16", "seed": 4,
}


def test_mergekit_export_reloads_as_the_same_recipe_but_the_seed():
    recipe = Recipe.model_validate(TIES)
    exported = to_mergekit(recipe)
    data = yaml.safe_load(exported.to_yaml())
    assert "seed" not in data and data["merge_method"] == "ties"
    assert Recipe.model_validate(data) == recipe.model_copy(update={"seed": 0})


def test_lines_scaling_is_a_lambda_gradient_mergekit_understands():
    recipe = Recipe.model_validate(TIES)
    data = yaml.safe_load(to_mergekit(recipe).to_yaml())
    assert data["parameters"]["lambda"] == [1.0, 1.5]


def test_randomised_methods_export_with_a_reproducibility_warning():
    recipe = Recipe.model_validate({**TIES, "merge_method": "dare_ties"})
    export = to_mergekit(recipe)
    assert any("bit for bit" in w for w in export.warnings)


def test_per_group_methods_are_refused_with_the_reason():
    recipe = Recipe.model_validate({**TIES, "groups": [{"filter": "embed", "merge_method": "linear"}]})
    try:
        to_mergekit(recipe)
    except NotExpressibleError as exc:
        assert "tensor group" in str(exc) and "one method to every tensor" in str(exc)
    else:
        raise AssertionError("expected a refusal")


def test_cli_export_writes_yaml_and_refuses_clearly(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(Recipe.model_validate(TIES).to_json())
    res = CliRunner().invoke(app, ["recipe", "export", str(good), "--format", "mergekit"])
    assert res.exit_code == 0
    assert yaml.safe_load(res.stdout)["merge_method"] == "ties"
    bad = tmp_path / "g.json"
    bad.write_text(Recipe.model_validate({**TIES, "groups": [{"filter": "embed", "merge_method": "linear"}]})
                   .to_json())
    res = CliRunner().invoke(app, ["recipe", "export", str(bad)])
    assert res.exit_code != 0
    assert "mergekit cannot express" in str(res.exception)
