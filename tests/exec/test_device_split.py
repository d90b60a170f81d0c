"""A worker split over several devices (gpus_per_worker: k), run over ["cpu", "cpu"] with the GPUs' placement logic.

On this machine the two devices are the same RAM, so where a tensor lives is
checked by device index: accelerate's device map says which device holds each
decoder layer, and every resident source tensor must carry its layer's index.
The weights must be the streaming merge's, bit for bit, loaded with plain
transformers. The ``cuda`` test runs the same on two GPUs where a machine has them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate
from evomerge.exec.device_split import meta_model, plan_split
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import evaluate_all, load_task
from evomerge.materialize.inplace import materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.study.config import RunConfig
from evomerge.study.study import Study, build_runner
from evomerge.testing import save_word_tokenizer, tiny_llama_config, tiny_llama_family

RECIPES = {
    "ties": ("ties", {"weight": 1.0, "density": 0.4}),
    "dare_ties": ("dare_ties", {"weight": 0.9, "density": 0.5}),
    "della": ("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.1}),
    "task_arithmetic": ("task_arithmetic", {"weight": 0.6}),
}
LAYERS = 6


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def split_family(request, tmp_path_factory) -> tuple[Path, list[Path]]:
    config = tiny_llama_config(num_layers=LAYERS, tie_word_embeddings=request.param)
    return tiny_llama_family(tmp_path_factory.mktemp("split"), config=config)


def _bytes(folder: Path) -> int:
    return sum(t.numel() * 4 for t in load_file(folder / "model.safetensors").values())


def _worker(family, devices=("cpu", "cpu"), **kwargs) -> EvalWorker:
    base, experts = family
    # each device can hold about half the model with its 4 resident float32 copies: a split is needed
    half = (_bytes(base) * 5) * 6 // 10
    kwargs.setdefault("device_memory", [half] * len(devices))
    return EvalWorker(str(base), [str(e) for e in experts], [], devices=list(devices), model_dtype="float32",
                      **kwargs)


def _recipe(family, key: str) -> Recipe:
    base, experts = family
    method, params = RECIPES[key]
    return Recipe.model_validate({"models": [{"model": str(e), "parameters": params} for e in experts],
                                  "base_model": str(base), "merge_method": method, "dtype": "float32", "seed": 7})


def _module_of(name: str) -> str:
    """The module accelerate places for a Llama checkpoint name (a decoder layer, or a top-level module)."""
    layer = re.match(r"(model\.layers\.\d+)\.", name)
    return layer.group(1) if layer else name.rsplit(".", 1)[0]


def test_the_layers_are_split_by_accelerates_map_in_order_over_both_devices(split_family):
    worker = _worker(split_family)
    split = worker.split
    assert split is not None and split.devices == (torch.device("cpu"), torch.device("cpu"))
    order = [split.modules[f"model.layers.{i}"] for i in range(LAYERS)]
    assert order == sorted(order) and set(order) == {0, 1}  # contiguous runs of whole decoder layers
    assert split.modules["model.embed_tokens"] == 0 and split.modules["model.norm"] == 1


def test_every_resident_tensor_is_kept_on_the_device_of_its_parameter(split_family):
    worker = _worker(split_family)
    split, resident = worker.split, worker.resident
    assert split is not None
    seen = set()
    for key, store in ((resident.base_model, resident._base), *resident._tensors.items()):
        for name, held in store.items():
            want = split.modules[_module_of(name)]
            assert resident.placement[name] == want, (key, name)
            assert held.device == split.devices[want]
            seen.add(want)
    assert seen == {0, 1}
    params = dict(worker.model.named_parameters())
    for name in resident.placement:  # the model's own parameter sits where its sources do
        if name in params:
            assert params[name].device == resident.device_of(name)


@pytest.mark.parametrize("key", list(RECIPES))
def test_a_candidate_merged_over_the_split_equals_the_streaming_merge_bit_for_bit(split_family, tmp_path, key):
    worker = _worker(split_family)
    recipe = _recipe(split_family, key)
    merge_to_disk(recipe, tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    materialize_into(worker.model, recipe, worker.resident)
    got = worker.model.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(got[name], tensor), name
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        assert torch.equal(worker.model(ids).logits, reference(ids).logits)


def test_per_device_budgets_stream_only_the_full_devices_tensors(split_family, tmp_path):
    """Device 1 holds nothing (budget 0): its sources are read from the files per candidate, device 0's stay."""
    worker = _worker(split_family, source_memory=None)
    reference = {n: t.clone() for n, t in worker.model.state_dict().items()}
    capped = _worker(split_family)
    placement = capped.resident.placement
    resident = type(capped.resident).from_paths(
        [str(e) for e in split_family[1]], str(split_family[0]), devices=["cpu", "cpu"], placement=placement,
        budget=[None, 0])
    for (_, name), tier in resident.tiers.items():
        assert tier == ("device" if placement[name] == 0 else "files"), name
    recipe = _recipe(split_family, "ties")
    materialize_into(worker.model, recipe, worker.resident)
    reference = {n: t.clone() for n, t in worker.model.state_dict().items()}
    materialize_into(capped.model, recipe, resident)
    for name, tensor in capped.model.state_dict().items():
        assert torch.equal(reference[name], tensor), name


def test_ties_order_tables_count_against_their_own_devices_budget(split_family):
    """Device 0's budget is exactly its sources: no room for order tables there; device 1 has room for them."""
    worker = _worker(split_family)
    placement = worker.resident.placement
    held_on_0 = sum(t.numel() * 4 for store in (worker.resident._base, *worker.resident._tensors.values())
                    for n, t in store.items() if placement[n] == 0)
    resident = type(worker.resident).from_paths(
        [str(e) for e in split_family[1]], str(split_family[0]), devices=["cpu", "cpu"], placement=placement,
        budget=[held_on_0, None])
    assert set(resident.tiers.values()) == {"device"}
    materialize_into(worker.model, _recipe(split_family, "ties"), resident)
    ordered = {placement[name] for (_, name, _) in resident._orders}
    assert ordered == {1}


def test_a_split_worker_scores_a_candidate_and_refuses_a_data_flow_recipe_by_name(split_family):
    worker = _worker(split_family)
    ok = worker.evaluate(Candidate("c", _recipe(split_family, "ties")))
    assert ok.ok, ok.error
    base, experts = split_family
    flow = Recipe.model_validate({"models": [{"model": str(base)}], "base_model": str(base), "merge_method": "linear",
                                  "layer_path": [{"model": str(experts[0]), "layer": i} for i in range(LAYERS)]})
    failed = worker.evaluate(Candidate("d", flow))
    assert not failed.ok and "data-flow recipes (layer_path) run on one device per worker" in failed.error


def test_a_model_that_fits_no_split_is_refused_with_the_numbers(split_family):
    with pytest.raises(ConfigError, match=r"does not fit 2 devices of .* whole decoder layers per device"):
        _worker(split_family, device_memory=[_bytes(split_family[0]) // 4] * 2)


def test_the_split_leaves_each_device_room_for_the_sources_beside_its_layers(split_family):
    """A small device 0: counting 4 float32 sources per element it takes fewer layers than for the model alone."""
    base = split_family[0]
    one = _bytes(base)
    model = meta_model(base, torch.float32)
    capacities = [one * 3 // 2, one * 10]

    def on_device_0(split) -> int:
        return sum(p.numel() * 4 for n, p in model.named_parameters() if split.index_of(n) == 0)

    alone = plan_split(base, ["cpu", "cpu"], capacities, model_dtype=torch.float32, model=model)
    beside = plan_split(base, ["cpu", "cpu"], capacities, model_dtype=torch.float32, model=model,
                        resident_bytes_per_element=4 * 4)
    assert 0 < on_device_0(beside) < on_device_0(alone)
    assert on_device_0(beside) * 5 <= capacities[0]  # its layers' instance and their 4 resident copies fit


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_on_two_gpus_each_layers_sources_live_and_merge_on_its_gpu(split_family, tmp_path):
    worker = _worker(split_family, devices=("cuda:0", "cuda:1"))
    split, resident = worker.split, worker.resident
    assert split is not None
    for store in (resident._base, *resident._tensors.values()):
        for name, held in store.items():
            assert held.device == torch.device(f"cuda:{split.modules[_module_of(name)]}"), name
    params = dict(worker.model.named_parameters())
    assert {p.device.index for p in params.values()} == {0, 1}
    recipe = _recipe(split_family, "ties")
    merge_to_disk(recipe, tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    materialize_into(worker.model, recipe, worker.resident)
    assert resident._orders
    for (_, name), order in resident._orders.items():  # TIES order tables beside their task vectors
        assert order.bucket.device == resident.device_of(name)
    got = worker.model.state_dict()
    for name, tensor in reference.state_dict().items():  # TIES on CUDA = on CPU: exact selection, same sums
        torch.testing.assert_close(got[name].cpu(), tensor, rtol=1e-6, atol=1e-7)
    ok = worker.evaluate(Candidate("c", recipe))
    assert ok.ok, ok.error


def _run_config(family, **runner) -> RunConfig:
    base, experts = family
    return RunConfig.from_dict({
        "name": "split", "sources": {"base": str(base), "models": [str(e) for e in experts]}, "space": "ties",
        "objectives": [{"name": "score", "direction": "maximize"}], "budget": {"evaluations": 1}, "runner": runner})


def test_gpus_per_worker_above_one_is_a_whole_number_of_gpus_split_over_by_one_worker(split_family):
    assert _run_config(split_family, device="cuda", gpus_per_worker=2).runner.worker_devices() == ["cuda:0", "cuda:1"]
    assert _run_config(split_family, type="ray", gpus_per_worker=0.5).runner.worker_devices() is None
    with pytest.raises(ConfigError, match="gpus_per_worker: 1.5: above 1 it is the number of GPUs"):
        _run_config(split_family, type="ray", gpus_per_worker=1.5)
    with pytest.raises(ConfigError, match=r"splits the local worker over cuda:0..1; set device: cuda \(not cpu\)"):
        _run_config(split_family, gpus_per_worker=2)


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() >= 2, reason="this machine has 2 GPUs")
def test_the_local_runner_without_the_gpus_refuses_in_one_line(split_family):
    config = _run_config(split_family, device="cuda", gpus_per_worker=2)
    with pytest.raises(ConfigError, match=r"a worker split over cuda:0, cuda:1 needs 2 CUDA devices; this machine "
                                          r"has \d+ \(runner.gpus_per_worker or runner.devices\)"):
        build_runner(config, [])


def test_runner_devices_pick_a_workers_devices_and_refuse_a_conflicting_key_by_name(split_family):
    picked = _run_config(split_family, devices=["cuda:1", "cuda:3"]).runner
    assert picked.worker_devices() == ["cuda:1", "cuda:3"] and picked.gpus() == 2 and picked.device == "cuda"
    one = _run_config(split_family, devices=["cuda:1"]).runner
    assert one.worker_devices() is None and one.worker_device() == "cuda:1" and one.device == "cuda:1"
    agreeing = _run_config(split_family, type="ray", device="cuda", gpus_per_worker=2, devices=["cuda:0", "cuda:1"])
    assert agreeing.runner.worker_devices() == ["cuda:0", "cuda:1"]
    stored = RunConfig.from_dict(yaml.safe_load(agreeing.to_yaml()))  # the run folder's copy reads back the same
    assert stored.runner == agreeing.runner
    assert _run_config(split_family, type="ray", devices=["cpu", "cpu"]).runner.gpus() == 0
    refusals = [
        ({"device": "cpu", "devices": ["cuda:0", "cuda:1"]}, r"runner: .*device: cpu conflicts with devices"),
        ({"gpus_per_worker": 3, "devices": ["cuda:0", "cuda:1"]}, r"gpus_per_worker: 3 conflicts with devices"),
        ({"gpus_per_worker": 1, "devices": ["cpu", "cpu"]}, r"gpus_per_worker: 1 conflicts with devices"),
        ({"type": "ray", "devices": ["cuda:1", "cuda:2"]}, r"a Ray actor numbers the GPUs Ray gives it from 0"),
        ({"devices": ["cuda", "cuda"]}, r"name each GPU of a split by its index"),
        ({"devices": ["cuda:0", "cuda:0"]}, r"a GPU is listed twice"),
        ({"devices": ["cpu", "cuda:0"]}, r"all cuda:N or all cpu"),
        ({"devices": ["gpu0"]}, r"devices: \['gpu0'\]"),
    ]
    for runner, message in refusals:
        with pytest.raises(ConfigError, match=message):
            _run_config(split_family, **runner)


def test_a_split_ray_worker_asks_ray_for_all_of_its_gpus(split_family, local_ray):
    config = _run_config(split_family, type="ray", gpus_per_worker=2)
    with pytest.raises(ConfigError, match=r"asks for 1 worker\(s\) x 2 GPU"):  # Ray has no GPU here to give
        build_runner(config, [])
    from evomerge.exec.ray_runner import RayRunner

    with pytest.raises(ConfigError, match=r"asks for 1 worker\(s\) x 2 GPU"):  # a function's actor: no model to split
        RayRunner(target="math:sqrt", gpus_per_worker=2)


TEXTS = ["the cat sat on the mat .", "a dog ran fast and then sat .", "a cat ran slow .",
         "then the cat and the dog ran on the mat ."]


def test_a_bf16_split_worker_scores_exactly_what_its_bf16_export_loads_as(tmp_path):
    """model_dtype auto (bf16) over [cpu, cpu]: weights and the perplexity objective both equal the export's, loaded
    with plain transformers (float32 storage: bf16 storage rounds the task vectors, split or not)."""
    config = tiny_llama_config(num_layers=LAYERS)
    base, experts = tiny_llama_family(tmp_path / "fam", config=config, dtype=torch.bfloat16)
    save_word_tokenizer(base)
    (tmp_path / "ppl.train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (tmp_path / "ppl.yaml").write_text(yaml.safe_dump({"name": "ppl", "kind": "perplexity", "batch_size": 2,
                                                       "data": {"train": "ppl.train.jsonl"}}))
    task = load_task(tmp_path / "ppl.yaml")
    one = sum(t.numel() * 2 for t in load_file(base / "model.safetensors").values())
    worker = EvalWorker(str(base), [str(e) for e in experts], [task], devices=["cpu", "cpu"],
                        device_memory=[one * 9 * 6 // 10] * 2)  # bf16 instance + 4 float32 copies: 9 bytes/element
    assert worker.split is not None and set(worker.split.modules.values()) == {0, 1}
    assert {p.dtype for p in worker.model.parameters()} == {torch.bfloat16}
    recipe = Recipe.model_validate({"models": [{"model": str(e), "parameters": {"weight": 1.0, "density": 0.5,
                                                                                 "epsilon": 0.1}} for e in experts],
                                    "base_model": str(base), "merge_method": "della", "seed": 3})
    result = worker.evaluate(Candidate("c", recipe))
    assert result.ok, result.error
    merge_to_disk(recipe, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto").eval()
    got = worker.model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(got[name], tensor), name
    with torch.inference_mode():
        scores = evaluate_all([task], reloaded, AutoTokenizer.from_pretrained(base), split="train")
    assert result.objectives == scores["ppl"].objectives


@pytest.mark.parametrize(("runner", "key"), [({"device": "cuda", "gpus_per_worker": 2}, "gpus_per_worker: 2"),
                                             ({"type": "ray", "devices": ["cpu", "cpu"]},
                                              r"devices: \['cpu', 'cpu'\]")], ids=["local", "ray"])
def test_a_data_flow_space_on_a_split_worker_is_refused_before_the_budget(split_family, tmp_path, runner, key):
    base, experts = split_family
    data = {"name": "dfs", "sources": {"base": str(base), "models": [str(e) for e in experts]},
            "space": {"kind": "dfs", "repeats": 1}, "objectives": [{"name": "score", "direction": "maximize"}],
            "budget": {"evaluations": 2}, "output": str(tmp_path / "dfs"), "test_split": None, "runner": runner}
    with pytest.raises(ConfigError, match=rf"runner.{key} splits the worker over several GPUs, but this "
                                          r"space's recipes are data-flow paths \(layer_path\)"):
        Study.create(RunConfig.from_dict(data))
    assert not (tmp_path / "dfs").exists()
