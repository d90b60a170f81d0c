"""evomerge's merges equal mergekit 0.1.5's, config for config, on tiny random Llama and Qwen2 models.

Each case is one mergekit YAML, given unchanged to both tools. Deterministic methods must give the
same float32 tensors up to rounding (rtol 1e-5: evomerge computes from base + task vectors, in a
different summation order); the randomised ones (DARE, DELLA: mergekit draws from the unseeded global
RNG) are compared in distribution. Where evomerge deliberately differs, a case says so and checks both
sides of the difference.

mergekit is run from its own environment: ``EVOMERGE_MERGEKIT_PYTHON`` names an interpreter that has
mergekit 0.1.5; otherwise a venv is made once under pytest's cache folder
(``.pytest_cache/d/mergekit-0.1.5``), seeing this environment's packages (torch, transformers) through a
``.pth`` file so that pip only adds mergekit and what this environment lacks (datasets, pyarrow, pandas,
immutables, sentencepiece: ~100 MB from PyPI). Marked slow (``pytest -m slow tests/parity``): 72 checks in
about 2 minutes on the shared 2-core machine, 4.5 minutes on the first run, which installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

pytestmark = pytest.mark.slow

MERGEKIT_VERSION = "0.1.5"
DRIVER = Path(__file__).with_name("mergekit_driver.py")
RTOL, ATOL = 1e-5, 1e-6

# ---- the cases: (models as (index, parameters), base index or None, global parameters, extra keys) --------
# index 0 is the base model, 1..3 the experts.
Case = tuple[list[tuple[int, dict[str, Any] | None]], int | None, dict[str, Any] | None, dict[str, Any] | None]
W3 = [(1, {"weight": 0.3}), (2, {"weight": 0.5}), (3, {"weight": 0.2})]
TV2 = [(1, {"weight": 0.7}), (2, {"weight": 0.5})]
PLAIN3 = [(1, None), (2, None), (3, None)]

DETERMINISTIC: dict[str, tuple[str, Case]] = {
    "linear": ("linear", (W3, None, None, None)),
    "linear_unnormalized": ("linear", ([(1, {"weight": 0.6}), (2, {"weight": 0.9})], None,
                                       {"normalize": False}, None)),
    # a base_model missing from models joins a base-less method as one more input (its weight: the global one)
    "linear_base_model_joins": ("linear", (TV2, 0, {"weight": 0.25}, None)),
    "task_arithmetic": ("task_arithmetic", (TV2, 0, {"lambda": 0.8, "normalize": True, "int8_mask": True}, None)),
    "task_arithmetic_ignores_density": ("task_arithmetic", ([(1, {"weight": 0.7, "density": 0.3}),
                                                             (2, {"weight": 0.5, "density": 0.3})], 0,
                                                            {"rescale": True}, None)),
    "ties": ("ties", ([(1, {"weight": 0.7, "density": 0.5}), (2, {"weight": 0.5, "density": 0.5})], 0,
                      {"normalize": True, "int8_mask": True}, None)),
    "ties_gradient_rescale_lambda": ("ties", ([(1, {"weight": 1.0, "density": [0.3, 0.9]}),
                                               (2, {"weight": 0.6, "density": 0.5}),
                                               (3, {"weight": -0.4, "density": 0.7})], 0,
                                              {"normalize": False, "rescale": True, "lambda": 1.2}, None)),
    "ties_filters": ("ties", (TV2, 0, {"density": [{"filter": "mlp", "value": 0.3}, {"value": 0.7}]}, None)),
    "ties_loose_spellings": ("ties", ([(1, {"weight": "0.7", "density": "5e-1"}), (2, {"weight": 0.5,
                                                                                      "density": 0.5})], 0,
                                      {"normalize": 1, "int8_mask": "true"}, None)),
    "breadcrumbs": ("breadcrumbs", ([(1, {"weight": 0.7, "density": 0.8, "gamma": 0.05}),
                                     (2, {"weight": 0.5, "density": 0.8, "gamma": 0.05})], 0, None, None)),
    "breadcrumbs_ties_rescale": ("breadcrumbs_ties", ([(1, {"weight": 0.7, "density": 0.7, "gamma": 0.1}),
                                                       (2, {"weight": 0.5, "density": 0.6, "gamma": 0.1})], 0,
                                                      {"rescale": True, "normalize": True}, None)),
    # gamma·n < 1 (here gamma 0): no outlier is cut, the top density fraction is kept (mergekit before 0.1.5
    # kept nothing there; 0.1.5 slices indices[n_bot : n_bot + n_keep] and agrees with evomerge)
    "breadcrumbs_gamma_zero": ("breadcrumbs", ([(1, {"weight": 1.0, "density": 0.8, "gamma": 0.0})], 0, None, None)),
    "slerp": ("slerp", ([(0, None), (1, None)], 0, {"t": 0.3}, None)),
    "slerp_mergekit_readme_filters": ("slerp", ([(0, None), (1, None)], 0, {"t": [
        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}, None)),
    "model_stock": ("model_stock", (PLAIN3, 0, None, None)),
    "model_stock_filter_wise": ("model_stock", (PLAIN3, 0, {"filter_wise": True}, None)),
    "sce": ("sce", (PLAIN3, 0, None, None)),
    "sce_select_topk": ("sce", (PLAIN3, 0, {"select_topk": 0.4, "int8_mask": True}, None)),
    "nuslerp_base": ("nuslerp", ([(1, {"weight": 0.4}), (2, {"weight": 0.6})], 0, None, None)),
    "nuslerp_no_base": ("nuslerp", ([(1, {"weight": 0.4}), (2, {"weight": 0.6})], None, None, None)),
    "nuslerp_rows": ("nuslerp", ([(1, {"weight": 0.7}), (2, {"weight": 0.3})], None,
                                 {"nuslerp_flatten": False}, None)),
    "nuslerp_columns_base": ("nuslerp", ([(1, {"weight": 0.5}), (2, {"weight": 0.5})], 0,
                                         {"nuslerp_flatten": False, "nuslerp_row_wise": True}, None)),
    "multislerp": ("multislerp", (W3, None, None, None)),
    "multislerp_base_unnormalized": ("multislerp", ([(1, {"weight": 0.3}), (2, {"weight": 0.3}),
                                                     (3, {"weight": 0.6})], 0, {"normalize_weights": False},
                                                    None)),
    "karcher": ("karcher", (PLAIN3, None, None, None)),
    "karcher_base_model_joins": ("karcher", ([(1, None), (2, None)], 0, {"max_iter": 3, "tol": 1e-6}, None)),
    "arcee_fusion": ("arcee_fusion", ([(1, None)], 0, None, None)),
    "nearswap": ("nearswap", ([(1, None)], 0, {"t": 3e-4}, None)),
    "ram": ("ram", (PLAIN3, 0, None, None)),
    "ram_epsilon": ("ram", (PLAIN3, 0, {"epsilon": 4e-4}, None)),
    "ramplus_tl": ("ramplus_tl", (PLAIN3, 0, {"r": 0.5, "alpha": 0.3, "epsilon": 3e-4}, None)),
    # (as many layers out as in: mergekit 0.1.5 cannot stack Qwen2 layers under transformers 5, whose
    # config then fails its layer_types check)
    "passthrough_slices_scaled": ("passthrough", ([], None, None, {"slices": [
        {"sources": [{"model": 1, "layer_range": [0, 1]}]},
        {"sources": [{"model": 2, "layer_range": [1, 2], "parameters": {"scale": 0.5}}]}]})),
}

# A gradient is evaluated at relative depth t; every tensor outside the layers (embeddings, final norm, head)
# at t = 0 in both tools (mergekit 0.1.5's module-level reader keeps t = 0; mergekit before 0.1.5 took t = 1
# after the layers): ties_gradient_rescale_lambda checks it, its final norm and head compared like every tensor.

RANDOMISED = {name: (name, ([(1, {"weight": 1.0, "density": 0.6, **({"epsilon": 0.2} if "della" in name else {})})],
                            0, None, None)) for name in ("dare_linear", "dare_ties", "della", "della_linear")}


# ---- models and tools ----------------------------------------------------------------------------------------
def _config(arch: str):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=64, max_position_embeddings=128, tie_word_embeddings=False)
    return LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)


def _family(root: Path, arch: str) -> list[Path]:
    """A base and three experts (base + Gaussian noise of 2 % of each tensor's spread), float32."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_config(arch))
    with torch.no_grad():  # norms start at exactly 1: spread them, else their tiny task vectors tie in magnitude
        for p in base.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.1)
    paths = [root / "base"]
    base.save_pretrained(paths[0])
    for k in range(3):
        gen = torch.Generator().manual_seed(100 + k)
        expert = AutoModelForCausalLM.from_config(_config(arch))
        with torch.no_grad():
            for (_, p), (_, b) in zip(expert.named_parameters(), base.named_parameters(), strict=True):
                p.copy_(b + torch.randn(b.shape, generator=gen) * 0.02 * (b.std() + 1e-3))
        paths.append(root / f"expert{k}")
        expert.save_pretrained(paths[-1])
    return paths


def _yaml(case: Case, method: str, paths: list[Path]) -> dict[str, Any]:
    models, base, params, extra = case
    data: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if models:
        data["models"] = [{"model": str(paths[i]), **({"parameters": p} if p else {})} for i, p in models]
    if base is not None:
        data["base_model"] = str(paths[base])
    if params:
        data["parameters"] = params
    for key, value in (extra or {}).items():
        if key == "slices":
            value = [{"sources": [{**s, "model": str(paths[s["model"]])} for s in sl["sources"]]} for sl in value]
        data[key] = value
    return data


def _mergekit_python(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("EVOMERGE_MERGEKIT_PYTHON")
    if given:
        return Path(given)
    root = Path(request.config.cache.mkdir(f"mergekit-{MERGEKIT_VERSION}"))
    python = root / "venv" / "bin" / "python"
    if not (root / "installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # this environment's packages (torch, transformers...) are visible to the venv, after its own
        Path(site, "_evomerge_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"mergekit=={MERGEKIT_VERSION}"],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            pytest.fail(f"installing mergekit {MERGEKIT_VERSION} into {root / 'venv'} failed:\n{done.stderr[-2000:]}")
        (root / "installed").write_text(MERGEKIT_VERSION)
    return python


@pytest.fixture(scope="module")
def mergekit_python(request: pytest.FixtureRequest) -> Path:
    python = _mergekit_python(request)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    assert version == MERGEKIT_VERSION, f"{python} has mergekit {version}, the parity test needs {MERGEKIT_VERSION}"
    return python


ALL_CASES = {**DETERMINISTIC, **RANDOMISED}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def merged(request: pytest.FixtureRequest, mergekit_python: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every case merged by both tools on one architecture: {case: (base, expert0, evomerge, mergekit)}."""
    root = tmp_path_factory.mktemp(request.param)
    paths = _family(root / "models", request.param)
    jobs = []
    for name, (method, case) in ALL_CASES.items():
        config = root / "configs" / f"{name}.yaml"
        config.parent.mkdir(exist_ok=True)
        config.write_text(yaml.safe_dump(_yaml(case, method, paths), sort_keys=False))
        jobs.append({"config": str(config), "out": str(root / "mergekit" / name)})
        merge_to_disk(Recipe.load(config), root / "evomerge" / name)
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(mergekit_python), str(DRIVER), str(root / "jobs.json"), str(root / "results.json")],
                   check=True, env=env, timeout=900)
    results = json.loads((root / "results.json").read_text())
    failed = {Path(k).name: v for k, v in results.items() if v != "ok"}
    assert not failed, f"mergekit refused: {failed}"
    base, expert = (load_file(p / "model.safetensors") for p in paths[:2])
    return {name: (base, expert, _load(root / "evomerge" / name), _load(root / "mergekit" / name))
            for name in ALL_CASES}


def _load(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# ---- the checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_method_equals_mergekit(merged, name: str) -> None:
    _, _, ours, theirs = merged[name]
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype == torch.float32, key
        torch.testing.assert_close(ours[key], tensor, rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{name} {k}: {m}")


@pytest.mark.parametrize("name", sorted(RANDOMISED))
def test_randomised_method_matches_mergekit_in_distribution(merged, name: str) -> None:
    base, expert, ours, theirs = merged[name]
    kept_fraction = {}
    for label, out in (("evomerge", ours), ("mergekit", theirs)):
        n_kept = n_all = 0
        kept_magnitude = all_magnitude = 0.0
        for key in base:
            delta = expert[key] - base[key]
            got = out[key] - base[key]
            kept = got != 0
            # rescale: the L1 norm of each dropped task vector is restored
            torch.testing.assert_close(got.abs().sum(), delta.abs().sum(), rtol=1e-4, atol=1e-6)
            if kept.any():  # kept entries are the task vector times one factor (up to base + x - base rounding)
                factor = float(got.abs().sum() / delta[kept].abs().sum())
                torch.testing.assert_close(got[kept], delta[kept] * factor, rtol=1e-3, atol=1e-6)
            n_kept += int(kept.sum())
            n_all += delta.numel()
            kept_magnitude += float(delta[kept].abs().mean()) * int(kept.sum())
            all_magnitude += float(delta.abs().sum())
        kept_fraction[label] = n_kept / n_all
        if name.startswith("della"):  # larger entries are kept more often
            assert kept_magnitude / n_kept > 1.05 * all_magnitude / n_all, label
    # ~20k entries: the kept fraction's standard deviation is ~0.0035; both near 0.6 and near each other
    for label, fraction in kept_fraction.items():
        assert abs(fraction - 0.6) < 0.02, (label, fraction)
    assert abs(kept_fraction["evomerge"] - kept_fraction["mergekit"]) < 0.03
