"""`evomerge recipe check` and `evomerge plan` read checkpoint headers only, so they import no torch
(issue 12, "commands that do not need torch must not import it"): each command runs in a fresh process,
and its ``-X importtime`` trace says which modules it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safety_helpers import env

from evomerge.exec.memory_plan import gpu_driver_present, plan_for_file
from evomerge.testing import llama_shapes, write_header_only_checkpoint

HEAVY = ("torch", "transformers", "accelerate", "safetensors.torch")
SHAPES = llama_shapes(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, vocab=100)


def evomerge(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -X importtime -m evomerge ARGS``: the result and the modules it imported."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "evomerge", *args], capture_output=True,
                         text=True, env=env(), timeout=120)
    mods = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    return res, mods


def sharded(folder: Path) -> Path:
    """A header-only checkpoint in two shards with its model.safetensors.index.json."""
    names = list(SHAPES)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        write_header_only_checkpoint(folder, {n: SHAPES[n] for n in part}).rename(folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture
def family(tmp: Path) -> tuple[Path, list[Path]]:
    base = sharded(tmp / "base")
    models = [tmp / "a", tmp / "b"]
    for m in models:
        write_header_only_checkpoint(m, SHAPES)
    return base, models


def run_config(tmp: Path, family, **runner) -> Path:
    base, models = family
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plan", "sources": {"base": str(base), "models": [str(m) for m in models]}, "space": "ties",
        "objectives": [{"name": "score", "direction": "maximize"}], "budget": {"evaluations": 10},
        "runner": runner}))
    return path


def test_recipe_check_of_a_sharded_base_imports_no_torch(tmp: Path, family) -> None:
    base, (a, b) = family
    recipe = tmp / "ties.yaml"
    recipe.write_text(yaml.safe_dump({
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in (a, b)],
        "base_model": str(base), "merge_method": "ties", "dtype": "bfloat16"}))
    res, mods = evomerge("recipe", "check", str(recipe))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["ok:", f"{len(SHAPES)}", "tensors,", "2", "layers,", "method(s)", "ties"]
    assert "evomerge.io.checkpoint" in mods and not mods & set(HEAVY)


def test_recipe_check_still_names_a_missing_tensor_without_torch(tmp: Path, family) -> None:
    _, (a, _) = family
    write_header_only_checkpoint(tmp / "short", {n: s for n, s in SHAPES.items() if n != "lm_head.weight"})
    recipe = tmp / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"models": [{"model": str(a)}, {"model": str(tmp / "short")}],
                                      "merge_method": "linear", "parameters": {"weight": 0.5}}))
    res, mods = evomerge("recipe", "check", str(recipe))
    assert res.returncode != 0 and "lm_head.weight" in res.stderr and str(tmp / "short") in res.stderr
    assert not mods & set(HEAVY)


def test_plan_with_device_memory_imports_no_torch_and_prints_the_in_process_plan(tmp: Path, family) -> None:
    config = run_config(tmp, family, device="cuda", storage_dtype="bfloat16", model_dtype="auto")
    res, mods = evomerge("plan", str(config), "--device-memory", "80GiB", "--host-memory", "64GiB")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "evomerge.exec.memory_plan" in mods and not mods & set(HEAVY)
    _, lines = plan_for_file(config, device_memory=80 * 2**30, host_memory=64 * 2**30)
    assert res.stdout.splitlines() == lines
    assert "  model instance (bfloat16): 186 KiB on the device" in lines  # 95,040 parameters x 2 bytes


def test_a_cpu_plan_measures_host_memory_without_torch(tmp: Path, family) -> None:
    res, mods = evomerge("plan", str(run_config(tmp, family, device="cpu")))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "available on this machine" in res.stdout and not mods & set(HEAVY)


@pytest.mark.skipif(gpu_driver_present(), reason="this machine has a GPU driver: plan measures the GPU with torch")
def test_a_gpu_plan_without_device_memory_refuses_without_importing_torch(tmp: Path, family) -> None:
    res, mods = evomerge("plan", str(run_config(tmp, family, device="cuda")), "--host-memory", "64GiB")
    assert res.returncode != 0 and "give --device-memory (e.g. 80GiB)" in res.stderr
    assert not mods & set(HEAVY)
