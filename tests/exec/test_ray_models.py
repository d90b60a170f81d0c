"""Real EvalWorker actors on a tiny Llama family: same objectives as the local runner, shared sources, size checks."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evomerge.errors import CheckpointError
from evomerge.exec.base import Candidate
from evomerge.exec.local import LocalRunner
from evomerge.exec.ray_runner import RayRunner
from evomerge.exec.shared_sources import ResidentSizes, check_fits, pack, resident_sizes, source_paths, unpack
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import load_task
from evomerge.materialize.inplace import ResidentSources
from evomerge.recipe.model import Recipe
from evomerge.testing import save_word_tokenizer

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "and", "then", "."]
TEXTS = ["the cat sat on the mat .", "a dog ran fast and then sat .", "the dog sat on a mat then ran .",
         "a cat ran slow .", "the mat sat .", "then the cat and the dog ran on the mat ."]


def save_tokenizer(folder: Path) -> None:
    save_word_tokenizer(folder, WORDS)


@pytest.fixture(scope="module")
def lm_family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """A tiny Llama base + 3 experts with a tokenizer, and a perplexity task on a few JSONL lines."""
    from evomerge.testing import tiny_llama_family

    root = tmp_path_factory.mktemp("lm")
    base, experts = tiny_llama_family(root, n_experts=3)
    save_tokenizer(base)
    (root / "ppl.train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    task = root / "ppl.yaml"
    task.write_text(yaml.safe_dump({"name": "ppl", "kind": "perplexity", "batch_size": 4,
                                    "data": {"train": "ppl.train.jsonl"}}))
    return base, experts, task


def recipes(base: Path, experts: list[Path]) -> list[Candidate]:
    # linear: the base_model joins as one more input (as in mergekit), weighted by the global weight
    specs = [("task_arithmetic", {"weight": 0.5}, None), ("task_arithmetic", {"weight": 1.2}, None),
             ("ties", {"weight": 1.0, "density": 0.5}, None), ("linear", {"weight": 1.0}, {"weight": 1.0}),
             ("dare_ties", {"weight": 0.8, "density": 0.6}, None), ("task_arithmetic", {"weight": 0.0}, None)]
    out = []
    for i, (method, params, globals_) in enumerate(specs):
        recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": params} for e in experts],
                                        "base_model": str(base), "merge_method": method, "parameters": globals_,
                                        "dtype": "float32", "seed": 5})
        out.append(Candidate(key=f"r{i}", recipe=recipe, genome=np.array([float(i)])))
    return out


def test_actors_merging_in_place_give_the_local_runners_objectives_even_across_a_restart(local_ray, lm_family):
    base, experts, task_path = lm_family
    task = load_task(task_path)
    cands = recipes(base, experts)
    local = {r.key: r for r in LocalRunner(EvalWorker(str(base), [str(e) for e in experts], [task])).evaluate(cands)}
    with RayRunner(base=str(base), models=[str(e) for e in experts], tasks=[task], workers=2) as runner:
        remote = {}
        for r in runner.evaluate(cands):
            remote[r.key] = r
            if len(remote) == 1:  # the worker that scored it dies mid-run: its candidates go to the other one
                os.kill(next(s.pid for s in runner.worker_states() if s.name == r.worker), signal.SIGKILL)
        states = runner.worker_states()
    assert set(remote) == set(local) and all(r.ok for r in remote.values())
    for key, r in remote.items():
        assert r.objectives == pytest.approx(local[key].objectives, rel=1e-6, abs=0), key
        assert r.per_example["ppl"] == pytest.approx(local[key].per_example["ppl"], rel=1e-6)
        assert r.merge_seconds > 0 and r.fitness_seconds > 0 and r.details["node_ip"] == "127.0.0.1"
    assert len({r.objectives["ppl"] for r in remote.values()}) == len(cands)  # the recipes really differ
    assert {r.worker for r in remote.values()} == {"ray-0", "ray-1"}
    assert sum(bool(r.details.get("worker_failures")) for r in remote.values()) <= 1
    for st in states:
        assert st.shared_sources and st.resident_bytes > 0
        assert st.memory["uss"] > 0 and st.memory["pss"] > 0


@pytest.mark.slow
def test_a_restarted_model_worker_reloads_from_the_held_spec_and_shared_sources(local_ray, lm_family):
    base, experts, task_path = lm_family
    task = load_task(task_path)
    cands = recipes(base, experts)
    expected = {r.key: r.objectives for r in LocalRunner(EvalWorker(str(base), [str(e) for e in experts], [task]))
                .evaluate(cands)}
    with RayRunner(base=str(base), models=[str(e) for e in experts], tasks=[task], workers=1) as runner:
        pid = runner.worker_states()[0].pid
        os.kill(pid, signal.SIGKILL)
        got = {r.key: r for r in runner.evaluate(cands)}  # waits for the restart (no other worker)
        state = runner.worker_states()[0]
    assert state.restarts == 1 and state.pid != pid and state.shared_sources
    assert set(got) == set(expected)
    for key, r in got.items():
        assert r.objectives == pytest.approx(expected[key], rel=1e-6), key


def test_packed_sources_are_zero_copy_views_that_merge_like_the_originals(lm_family):
    base, experts, _ = lm_family
    models = [str(e) for e in experts]
    original = ResidentSources.from_paths(models, str(base))
    state = pack(original)
    shared = unpack(state, source_paths(str(base), models))
    name = next(iter(state["base"]))
    view = shared._base[name]
    assert view.data_ptr() == state["base"][name].__array_interface__["data"][0]  # no copy was made
    key = next(iter(state["tensors"]))
    assert torch.equal(shared._tensors[key][name], original._tensors[key][name])
    assert shared.nbytes == original.nbytes


def test_packed_bfloat16_sources_round_trip_exactly(lm_family):
    base, experts, _ = lm_family
    models = [str(e) for e in experts]
    original = ResidentSources.from_paths(models, str(base), storage_dtype=torch.bfloat16)
    shared = unpack(pack(original), source_paths(str(base), models))
    for key, store in original._tensors.items():
        for name, tensor in store.items():
            assert shared._tensors[key][name].dtype == torch.bfloat16
            assert torch.equal(shared._tensors[key][name], tensor)


def test_size_check_names_the_source_that_does_not_fit_and_the_sizes():
    sizes = ResidentSizes(per_source={"/m/base": 4 * 2**30, "/m/math": 4 * 2**30, "/m/code": 4 * 2**30},
                          model=4 * 2**30, storage_dtype="float32")
    check_fits(sizes, 17 * 2**30, "cuda")
    with pytest.raises(CheckpointError, match=r"source /m/code does not fit on cuda: it needs 4 GiB.*needs 16 GiB"
                                              r".*cuda has 15 GiB available"):
        check_fits(sizes, 15 * 2**30, "cuda")
    check_fits(sizes, 5 * 2**30, "cpu", sources_resident=False)  # shared sources: only the model instance counts
    with pytest.raises(CheckpointError, match="model instance"):
        check_fits(sizes, 2**30, "cpu", sources_resident=False)


def test_a_worker_whose_sources_do_not_fit_streams_the_rest_and_scores_the_same(local_ray, lm_family):
    base, experts, task_path = lm_family
    models = [str(e) for e in experts]
    task = load_task(task_path)
    sizes = resident_sizes(str(base), models)
    budget = sizes.model + sizes.per_source[str(base)] + 1  # the base fits, the experts are read from the files
    cands = recipes(base, experts)[:3]
    expected = [r.objectives for r in LocalRunner(EvalWorker(str(base), models, [task], source_memory=None))
                .evaluate(cands)]
    with RayRunner(base=str(base), models=models, tasks=[task], workers=1, share_sources=False,
                   memory_budget_bytes=budget) as runner:
        assert runner.worker_states()[0].resident_bytes <= sizes.per_source[str(base)] + 1
        assert [r.objectives for r in runner.evaluate(cands)] == expected
    with pytest.raises(CheckpointError, match=r"Ray worker ray-0 on 127.0.0.1: the model instance .* does not fit"):
        RayRunner(base=str(base), models=models, tasks=[task], workers=1, share_sources=False,
                  memory_budget_bytes=sizes.model - 1)


def test_memory_figures_without_psutil_come_from_proc_and_agree(monkeypatch):
    import sys

    from evomerge.exec.shared_sources import device_available_bytes, process_memory

    before = process_memory()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "psutil", None)  # the /proc fallback, for machines without psutil
        without = process_memory()
    after = process_memory()
    # the process's memory moves between readings (threads, allocator): the /proc figure must lie
    # within the psutil readings taken just before and just after it, give or take 20 %
    for key in ("rss", "uss", "pss"):
        low, high = sorted((before[key], after[key]))
        assert 0.8 * low <= without[key] <= 1.2 * high, key
    assert device_available_bytes(torch.device("cpu")) > 0
