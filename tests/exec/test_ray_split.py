"""Ray actors whose worker is split over several devices (``runner.devices``), run over [cpu, cpu].

Inside an actor Ray numbers its own GPUs cuda:0..k-1; the CPU suite runs the same
path with ``devices: [cpu, cpu]``: each actor builds accelerate's split of the
model and reads its own sources beside each layer. Its objectives must be exactly
the local runner's for the same recipes (one thread on both sides, so the same
reductions run in the same order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evomerge.exec.base import Candidate
from evomerge.fitness import load_task
from evomerge.recipe.model import Recipe
from evomerge.study.config import RunConfig
from evomerge.study.study import build_runner
from evomerge.testing import save_word_tokenizer, tiny_llama_config, tiny_llama_family

TEXTS = ["the cat sat on the mat .", "a dog ran fast and then sat .", "a cat ran slow .",
         "then the cat and the dog ran on the mat ."]
LAYERS = 4


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("raysplit")
    base, experts = tiny_llama_family(root, config=tiny_llama_config(num_layers=LAYERS))
    save_word_tokenizer(base)
    (root / "ppl.train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    task = root / "ppl.yaml"
    task.write_text(yaml.safe_dump({"name": "ppl", "kind": "perplexity", "batch_size": 2,
                                    "data": {"train": "ppl.train.jsonl"}}))
    return base, experts, task


def _config(family, **runner) -> RunConfig:
    base, experts, task = family
    return RunConfig.from_dict({
        "name": "raysplit", "sources": {"base": str(base), "models": [str(e) for e in experts]}, "space": "ties",
        "objectives": [{"task": str(task)}],
        "budget": {"evaluations": 1}, "runner": {"threads": 1, **runner}})


def _candidates(family) -> list[Candidate]:
    base, experts, _ = family
    specs = [("ties", {"weight": 1.0, "density": 0.4}), ("dare_ties", {"weight": 0.9, "density": 0.5}),
             ("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.1}), ("task_arithmetic", {"weight": 0.6})]
    return [Candidate(key=f"c{i}", genome=np.array([float(i)]), recipe=Recipe.model_validate({
        "models": [{"model": str(e), "parameters": params} for e in experts], "base_model": str(base),
        "merge_method": method, "dtype": "float32", "seed": 11})) for i, (method, params) in enumerate(specs)]


def _scores(runner, candidates) -> dict[str, tuple]:
    out = {}
    for r in runner.evaluate(candidates):
        assert r.ok, r.error
        out[r.key] = (r.objectives, r.per_example["ppl"].tolist())
    return out


def test_ray_actors_split_over_two_devices_score_exactly_what_the_local_runner_scores(local_ray, family):
    workers = 2
    tasks = [load_task(family[2])]
    candidates = _candidates(family)
    threads = torch.get_num_threads()
    try:
        local = build_runner(_config(family), tasks)  # one device, one thread (runner.threads)
        expected = _scores(local, candidates)
        local.close()
        split = build_runner(_config(family, devices=["cpu", "cpu"]), tasks)  # the local worker, split
        assert split.worker.split is not None and set(split.worker.split.modules.values()) == {0, 1}
        assert _scores(split, candidates) == expected
        split.close()
    finally:
        torch.set_num_threads(threads)
    assert len({v[0]["ppl"] for v in expected.values()}) == len(candidates)  # the recipes really differ
    config = _config(family, type="ray", workers=workers, devices=["cpu", "cpu"])
    assert config.runner.worker_devices() == ["cpu", "cpu"] and config.runner.gpus() == 0
    with build_runner(config, tasks) as runner:
        got = _scores(runner, candidates)
        states = runner.worker_states()
    assert got == expected  # objectives and per-example scores, exactly
    assert len(states) == workers
    for state in states:
        assert state.split is not None and len(state.split) == 2 and all(state.split), state.split
        layers = [f"model.layers.{i}" for i in range(LAYERS)]
        assert [m for m in state.split[0] + state.split[1] if m in layers] == layers  # in order, whole layers
        assert not state.shared_sources and state.resident_bytes > 0  # its own sources, not the node's
    # runner.source_memory reaches the actors: 0 bytes per device, every source read from the files per candidate
    with build_runner(_config(family, type="ray", devices=["cpu", "cpu"], source_memory="0"), tasks) as runner:
        assert runner.worker_states()[0].resident_bytes == 0
        assert _scores(runner, candidates) == expected


def test_a_split_actor_that_cannot_fit_is_refused_by_the_split_with_the_numbers(local_ray, family):
    """The one-device size check does not apply to a split actor: the split's own refusal comes back by name."""
    from evomerge.errors import ConfigError
    from evomerge.exec.ray_runner import RayRunner

    base, experts, _ = family
    with pytest.raises(ConfigError, match=r"Ray worker ray-0 on 127\.0\.0\.1: model .* does not fit 2 devices of "):
        RayRunner(base=str(base), models=[str(e) for e in experts], devices=["cpu", "cpu"],
                  memory_budget_bytes=4096)
