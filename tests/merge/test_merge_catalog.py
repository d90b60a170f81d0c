"""Method declarations are data: listing methods and validating recipes import no torch; each
declaration's tensor function is imported on first use, from the module it names."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evomerge.errors import MergeError
from evomerge.merge import all_methods
from evomerge.merge.spec import MergeMethod

REPO = Path(__file__).resolve().parents[2]
TIES_YAML = """\
models:
  - model: a
    parameters: {weight: 1.0, density: 0.5}
  - model: b
    parameters: {weight: [0.2, 0.8], density: 0.7}
base_model: base
merge_method: ties
parameters: {normalize: true, int8_mask: true}
dtype: bfloat16
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def imported_by(*args: str) -> tuple[set[str], str]:
    """The modules ``python -X importtime -m evomerge ARGS`` imported, and its stdout."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "evomerge", *args], capture_output=True,
                         text=True, env=_env(), timeout=120, check=True)
    return {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if "|" in line}, res.stdout


def test_evomerge_methods_lists_every_method_without_importing_torch() -> None:
    mods, stdout = imported_by("methods")
    assert "evomerge.merge.catalog" in mods
    assert "torch" not in mods and "transformers" not in mods
    assert not any(m.startswith("evomerge.merge.methods.") and m != "evomerge.merge.methods.params"
                   and m != "evomerge.merge.methods.lines" for m in mods)
    for m in all_methods():
        assert f"│ {m.name} " in stdout, m.name


def test_converting_a_mergekit_yaml_imports_no_torch(tmp_path: Path) -> None:
    config = tmp_path / "ties.yml"
    config.write_text(TIES_YAML)
    mods, stdout = imported_by("recipe", "export", str(config), "--format", "yaml")
    assert "torch" not in mods
    assert "merge_method: ties" in stdout and "int8_mask: true" in stdout


def test_validating_recipes_and_building_a_search_space_imports_no_torch(tmp_path: Path) -> None:
    code = f"""
import sys
from evomerge.merge import get_method
from evomerge.recipe.model import Recipe
from evomerge.spaces.config import PSConfig
from evomerge.spaces.base import Sources
from evomerge.spaces.ps import PSSpace
recipe = Recipe.load({str(tmp_path / "ties.yml")!r})
get_method("ties").resolve_params({{"weight": 0.5, "density": 0.3}}, 2, where="here")
space = PSSpace(PSConfig(method=["ties", "dare_ties", "sce"], layer_groups=2), Sources(base="base", models=["a", "b"],
                num_layers={{"base": 4, "a": 4, "b": 4}}))
space.decode(space.x0())
print(recipe.merge_method, sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    (tmp_path / "ties.yml").write_text(TIES_YAML)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ties", "[]"]


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_each_declaration_names_a_function_of_its_own_module(method: MergeMethod) -> None:
    assert isinstance(method.impl, str)
    module, _, attr = method.impl.partition(":")
    assert module.startswith("evomerge.merge.methods.") and attr
    assert method.fn is getattr(importlib.import_module(module), attr) and callable(method.fn)


def test_a_declaration_whose_function_cannot_be_imported_says_which() -> None:
    broken = MergeMethod(name="broken", impl="evomerge.merge.methods.ties:_no_such_fn", params=(), needs_base=True)
    with pytest.raises(MergeError, match=r"method 'broken': cannot import its function "
                                         r"'evomerge.merge.methods.ties:_no_such_fn'"):
        broken.fn  # noqa: B018


def test_a_declaration_naming_a_missing_module_says_which() -> None:
    broken = MergeMethod(name="gone", impl="evomerge.merge.methods.gone:_fn", params=(), needs_base=True)
    with pytest.raises(MergeError, match=r"method 'gone': cannot import its function '.*methods.gone:_fn'"):
        broken.fn  # noqa: B018


def test_a_callable_is_a_declaration_too() -> None:
    def double(inputs, params, generator):
        return inputs.sources[0] * 2

    assert MergeMethod(name="double", impl=double, params=(), needs_base=False).fn is double
