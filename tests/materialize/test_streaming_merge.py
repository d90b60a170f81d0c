"""End to end: recipes merged through the CLI and the library, checked against merges computed in torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.errors import CheckpointError, ConfigError, MergeError
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe


def state(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def logits_of(model_dir_or_state, config_dir: Path | None = None) -> torch.Tensor:
    from transformers import AutoConfig, AutoModelForCausalLM

    ids = torch.arange(12).reshape(2, 6) % 64
    if isinstance(model_dir_or_state, Path):
        model = AutoModelForCausalLM.from_pretrained(model_dir_or_state, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir))
        model.load_state_dict(model_dir_or_state, strict=False)
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def ties_by_definition(base, experts, weights, density):
    """TIES (Yadav et al. 2023) written directly from the paper, independently of evomerge."""
    taus = []
    for e in experts:
        tau = (e - base).flatten()
        k = int(density * tau.numel())  # mergekit keeps floor(density * n)
        keep = torch.zeros_like(tau, dtype=torch.bool)
        if k > 0:
            keep[tau.abs().argsort(descending=True)[:k]] = True
        taus.append(torch.where(keep, tau, torch.zeros_like(tau)))
    weighted = torch.stack([w * t for w, t in zip(weights, taus, strict=True)])
    sign = torch.sign(weighted.sum(0))
    agree = (torch.sign(weighted) == sign) & (weighted != 0)
    wsum = torch.stack([torch.full_like(taus[0], w) for w in weights])
    num = (weighted * agree).sum(0)
    den = (wsum * agree).sum(0)
    merged = torch.where(den != 0, num / den.clamp(min=1e-12), torch.zeros_like(num))
    return base + merged.reshape(base.shape)


def test_task_arithmetic_via_cli_mergekit_yaml_matches_torch(family, tmp_path):
    base, experts = family
    weights = [0.3, 0.7, 1.2]
    cfg = tmp_path / "ta.yml"
    cfg.write_text(textwrap.dedent(f"""
        models:
          - model: {experts[0]}
            parameters: {{weight: {weights[0]}}}
          - model: {experts[1]}
            parameters: {{weight: {weights[1]}}}
          - model: {experts[2]}
            parameters: {{weight: {weights[2]}}}
        base_model: {base}
        merge_method: task_arithmetic
        dtype: float32
    """))
    result = CliRunner().invoke(app, ["merge", str(cfg), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    b, es = state(base), [state(e) for e in experts]
    expected = {k: b[k] + sum(w * (e[k] - b[k]) for w, e in zip(weights, es, strict=True)) for k in b}
    got = state(tmp_path / "out")
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits_of(tmp_path / "out"), logits_of(expected, base), rtol=1e-5, atol=1e-5)


def test_ties_via_evomerge_json_recipe_matches_the_papers_definition(family, tmp_path):
    base, experts = family
    recipe = {
        "models": [{"model": str(e), "parameters": {"weight": w}} for e, w in zip(experts, [1.0, 0.5, 0.8],
                                                                                  strict=True)],
        "base_model": str(base), "merge_method": "ties", "parameters": {"density": 0.4},
        "dtype": "float32", "seed": 3,
    }
    cfg = tmp_path / "ties.json"
    cfg.write_text(json.dumps(recipe))
    result = CliRunner().invoke(app, ["merge", str(cfg), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    b, es = state(base), [state(e) for e in experts]
    got = state(tmp_path / "out")
    for k in b:
        expected = ties_by_definition(b[k], [e[k] for e in es], [1.0, 0.5, 0.8], 0.4)
        torch.testing.assert_close(got[k], expected, rtol=0, atol=1e-6, msg=k)
    torch.testing.assert_close(logits_of(tmp_path / "out"),
                               logits_of({k: ties_by_definition(b[k], [e[k] for e in es], [1.0, 0.5, 0.8], 0.4)
                                          for k in b}, base), rtol=1e-5, atol=1e-5)


def test_weight_gradient_and_filters_apply_per_layer_and_module(family, tmp_path):
    base, experts = family
    recipe = Recipe.model_validate({
        "models": [{"model": str(experts[0]), "parameters": {
            "weight": [{"filter": "mlp", "value": 2.0}, {"value": [0.0, 1.0]}]}}],
        "base_model": str(base), "merge_method": "task_arithmetic", "dtype": "float32",
    })
    merge_to_disk(recipe, tmp_path / "out")
    b, e, got = state(base), state(experts[0]), state(tmp_path / "out")
    # two layers: t = 0 for layer 0, t = 1 for layer 1; every tensor outside the layers (embeddings, final norm,
    # head) at t = 0, as mergekit 0.1.5 plans them (mergekit before 0.1.5 took t = 1 for the norm and head)
    cases = {
        "model.embed_tokens.weight": 0.0,
        "model.layers.0.self_attn.q_proj.weight": 0.0,
        "model.layers.1.self_attn.q_proj.weight": 1.0,
        "model.layers.0.mlp.up_proj.weight": 2.0,
        "model.layers.1.mlp.down_proj.weight": 2.0,
        "model.norm.weight": 0.0,
        "lm_head.weight": 0.0,
    }
    for name, w in cases.items():
        torch.testing.assert_close(got[name], b[name] + w * (e[name] - b[name]), rtol=0, atol=1e-6, msg=name)


def test_groups_give_tensors_their_own_method(family, tmp_path):
    base, experts = family
    recipe = Recipe.model_validate({
        "models": [{"model": str(e), "parameters": {"weight": 1.0, "density": 0.5}} for e in experts[:2]],
        "base_model": str(base), "merge_method": "ties", "dtype": "float32",
        "groups": [{"filter": "embed_tokens", "merge_method": "linear",
                    "model_parameters": {str(experts[0]): {"weight": 1.0}, str(experts[1]): {"weight": 3.0}}}],
    })
    merge_to_disk(recipe, tmp_path / "out")
    e0, e1, got = state(experts[0]), state(experts[1]), state(tmp_path / "out")
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(got[name], (e0[name] + 3 * e1[name]) / 4, rtol=0, atol=1e-6)


def test_passthrough_slices_stack_layers_and_the_result_loads(family, tmp_path):
    _base, experts = family
    a, b = experts[0], experts[1]
    recipe = Recipe.model_validate({
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 2]}]},
                   {"sources": [{"model": str(b), "layer_range": [1, 2]}]}],
        "merge_method": "passthrough", "dtype": "float32",
    })
    merge_to_disk(recipe, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    sa, sb, got = state(a), state(b), state(tmp_path / "out")
    assert torch.equal(got["model.layers.0.mlp.up_proj.weight"], sa["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(got["model.layers.1.mlp.up_proj.weight"], sa["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(got["model.layers.2.mlp.up_proj.weight"], sb["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(got["model.embed_tokens.weight"], sa["model.embed_tokens.weight"])  # first slice's model
    assert torch.equal(got["lm_head.weight"], sb["lm_head.weight"])  # last slice's model
    assert logits_of(tmp_path / "out").shape == (2, 6, 64)


def test_layer_swap_as_slices_takes_outer_layers_and_io_from_the_other_expert(family, tmp_path):
    _, experts = family
    math, lang = experts[0], experts[1]
    recipe = Recipe.model_validate({
        "slices": [{"sources": [{"model": str(lang), "layer_range": [0, 1]}]},
                   {"sources": [{"model": str(math), "layer_range": [1, 2]}]}],
        "merge_method": "passthrough", "dtype": "float32",
    })
    merge_to_disk(recipe, tmp_path / "out")
    sm, sl, got = state(math), state(lang), state(tmp_path / "out")
    assert torch.equal(got["model.layers.0.self_attn.q_proj.weight"], sl["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(got["model.layers.1.self_attn.q_proj.weight"], sm["model.layers.1.self_attn.q_proj.weight"])


def test_dare_ties_is_bit_identical_for_the_same_seed_and_differs_for_another(family, tmp_path):
    base, experts = family

    def run(seed: int, out: str):
        recipe = Recipe.model_validate({
            "models": [{"model": str(e), "parameters": {"weight": 1.0, "density": 0.3}} for e in experts],
            "base_model": str(base), "merge_method": "dare_ties", "dtype": "float32", "seed": seed})
        merge_to_disk(recipe, tmp_path / out)
        return state(tmp_path / out)

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_output_dtype_and_shards(family, tmp_path):
    _base, experts = family
    recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": {"weight": 1.0}} for e in experts],
                                    "merge_method": "linear", "out_dtype": "bfloat16"})
    merge_to_disk(recipe, tmp_path / "out", max_shard_bytes=20_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    got = state(tmp_path / "out")
    es = [state(e) for e in experts]
    name = "model.layers.1.mlp.up_proj.weight"
    assert got[name].dtype == torch.bfloat16
    assert torch.equal(got[name], (sum(e[name] for e in es) / 3).to(torch.bfloat16))
    assert (tmp_path / "out" / "evomerge_recipe.json").is_file()


# ---- bad input: clear errors, nothing half-written -----------------------------------------------------

def _assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_density_out_of_range_names_tensor_and_parameter_and_writes_nothing(family, tmp_path):
    base, experts = family
    recipe = Recipe.model_validate({"models": [{"model": str(experts[0]), "parameters": {"weight": 1, "density": 1.5}}],
                                    "base_model": str(base), "merge_method": "ties"})
    with pytest.raises(MergeError, match=r"tensor 'model\.embed_tokens\.weight'.*'density' = 1\.5"):
        merge_to_disk(recipe, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_misspelled_parameter_is_named(family, tmp_path):
    base, experts = family
    recipe = Recipe.model_validate({"models": [{"model": str(experts[0]), "parameters": {"wieght": 1}}],
                                    "base_model": str(base), "merge_method": "task_arithmetic"})
    with pytest.raises(ConfigError, match=r"models\[0\].*'wieght' is not a parameter of task_arithmetic"):
        merge_to_disk(recipe, tmp_path / "out")


def test_missing_required_weight_is_named(family, tmp_path):
    base, experts = family
    recipe = Recipe.model_validate({"models": [{"model": str(experts[0])}], "base_model": str(base),
                                    "merge_method": "ties", "parameters": {"density": 0.5}})
    with pytest.raises((ConfigError, MergeError), match="weight"):
        merge_to_disk(recipe, tmp_path / "out")


def test_missing_model_folder_is_named(family, tmp_path):
    base, _ = family
    recipe = Recipe.model_validate({"models": [{"model": str(tmp_path / "nope"), "parameters": {"weight": 1}}],
                                    "base_model": str(base), "merge_method": "task_arithmetic"})
    with pytest.raises(CheckpointError, match="nope"):
        merge_to_disk(recipe, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_shape_mismatch_names_the_tensor_and_both_folders(family, tmp_path):
    from evomerge.testing import save_tiny_llama, tiny_llama_config

    base, _ = family
    other = save_tiny_llama(tmp_path / "wide", seed=5, config=tiny_llama_config(intermediate_size=96))
    recipe = Recipe.model_validate({"models": [{"model": str(other), "parameters": {"weight": 1}}],
                                    "base_model": str(base), "merge_method": "task_arithmetic"})
    with pytest.raises(CheckpointError, match=r"mlp\.(up|gate|down)_proj"):
        merge_to_disk(recipe, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_vocab_mismatch_is_reported_as_such(family, tmp_path):
    from evomerge.testing import save_tiny_llama, tiny_llama_config

    base, _ = family
    other = save_tiny_llama(tmp_path / "bigvocab", seed=5, config=tiny_llama_config(vocab_size=80))
    recipe = Recipe.model_validate({"models": [{"model": str(other), "parameters": {"weight": 1}}],
                                    "base_model": str(base), "merge_method": "task_arithmetic"})
    with pytest.raises(CheckpointError, match=r"(?i)vocab"):
        merge_to_disk(recipe, tmp_path / "out")


def test_nan_in_a_source_names_the_tensor_and_file_and_writes_nothing(family, tmp_path):
    import shutil

    from safetensors.torch import save_file

    base, experts = family
    bad = tmp_path / "bad"
    shutil.copytree(experts[0], bad)
    tensors = state(bad)
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    recipe = Recipe.model_validate({"models": [{"model": str(bad), "parameters": {"weight": 1}}],
                                    "base_model": str(base), "merge_method": "task_arithmetic"})
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*bad"):
        merge_to_disk(recipe, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_cli_reports_errors_without_a_traceback(family, tmp_path):
    cfg = tmp_path / "r.yml"
    cfg.write_text("models: [{model: a}]\nmerge_method: tiez\n")
    proc = subprocess.run([sys.executable, "-m", "evomerge.cli", "merge", str(cfg), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown merge method 'tiez'" in proc.stderr
    assert "Traceback" not in proc.stderr
