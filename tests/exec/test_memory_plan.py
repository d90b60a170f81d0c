"""`evomerge plan` on header-only 7B / 14B / 70B Llama checkpoints (3 fine-tunes + base): bytes from the shapes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.exec.memory_plan import DEVICE, FILES, HOST, Slot, make_plan, parse_bytes, place, plan_for_file
from evomerge.study.config import RunConfig
from evomerge.testing import llama_shapes, write_header_only_checkpoint, write_plan_config

GIB = 2**30
SIZES = {  # Llama-2-7B, a Llama-shaped 14B (Qwen2.5-14B's dimensions), Llama-3-70B
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    "14b": dict(hidden=5120, intermediate=13824, layers=48, heads=40, kv_heads=8, vocab=152064),
    "70b": dict(hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8, vocab=128256),
}
PARAMS = {"7b": 6_738_415_616, "14b": 14_769_689_600, "70b": 70_553_706_496}  # published counts / by hand


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """Sparse bf16 checkpoints: real headers, no weights (a 70B family takes no disk)."""
    root = tmp_path_factory.mktemp("sizes")
    out = {}
    for size, dims in SIZES.items():
        shapes = llama_shapes(**dims)
        folders = [root / size / n for n in ("base", "chat", "math", "code")]
        for folder in folders:
            write_header_only_checkpoint(folder, shapes)
        out[size] = (str(folders[0]), [str(f) for f in folders[1:]])
    return out


def _config(tmp_path: Path, family, **runner) -> Path:
    return write_plan_config(tmp_path, family[0], family[1], **runner)


def test_the_checkpoints_have_the_published_parameter_counts(families):
    for size, dims in SIZES.items():
        assert sum(math.prod(s) for s in llama_shapes(**dims).values()) == PARAMS[size]


def test_7b_bf16_fits_one_80gib_gpu_entirely(families, tmp_path):
    plan, lines = plan_for_file(_config(tmp_path, families["7b"], device="cuda", storage_dtype="bfloat16"),
                                device_memory=80 * GIB, host_memory=512 * GIB)
    w = plan.worker
    one = 2 * PARAMS["7b"]  # bf16 bytes of one checkpoint
    assert plan.fits and w.model_bytes == one and w.model_dtype == "bfloat16"
    assert w.tier_bytes(DEVICE) == 4 * one and w.tier_bytes(HOST) == 0 and w.tier_bytes(FILES) == 0
    # TIES' magnitude orders (1 byte per task-vector entry) fill what the budget leaves, tensor by tensor
    room, largest = 80 * GIB - 8 * GIB - 5 * one, 32000 * 4096
    assert room - largest < w.tables <= room
    assert w.headroom == 80 * GIB - 5 * one - w.tables >= w.reserve
    assert w.host_to_device == 0 and w.file_reads == 0
    text = "\n".join(lines)
    assert "model instance (bfloat16): 12.6 GiB on the device" in text
    assert "per candidate: 0 B host -> device, 0 B read from the source files" in text


def test_7b_float32_task_vectors_spill_to_pinned_host_memory(families, tmp_path):
    plan, _ = plan_for_file(_config(tmp_path, families["7b"], device="cuda"), device_memory=80 * GIB,
                            host_memory=512 * GIB)
    w = plan.worker
    one32 = 4 * PARAMS["7b"]
    free = 80 * GIB - 8 * GIB - 2 * PARAMS["7b"]  # the bf16 instance and the 10% reserve
    largest = 4 * 32000 * 4096  # float32 embedding: the largest tensor, the most first fit can leave unused
    assert free - largest < w.tier_bytes(DEVICE) <= free
    assert w.tier_bytes(DEVICE) + w.tier_bytes(HOST) == 4 * one32 and w.tier_bytes(FILES) == 0
    assert w.host_to_device == w.tier_bytes(HOST)
    assert w.headroom >= w.reserve == 8 * GIB


def test_14b_on_8x80gib_uses_device_then_the_workers_host_share_then_the_files(families, tmp_path):
    cfg = _config(tmp_path, families["14b"], type="ray", workers=8, gpus_per_worker=1, storage_dtype="bfloat16")
    plan, lines = plan_for_file(cfg, device_memory=80 * GIB, host_memory=512 * GIB)
    w = plan.worker
    one = 2 * PARAMS["14b"]
    host_share = (512 * GIB - 8 * GIB) // 8  # 1 GiB per worker process kept aside
    free = 80 * GIB - 8 * GIB - one
    largest = 2 * 152064 * 5120
    assert plan.fits and w.host_budget == host_share
    assert free - largest < w.tier_bytes(DEVICE) <= free
    assert host_share - largest < w.tier_bytes(HOST) <= host_share
    assert w.tier_bytes(DEVICE) + w.tier_bytes(HOST) + w.tier_bytes(FILES) == 4 * one  # bf16 files: same bytes
    assert w.file_reads == w.tier_bytes(FILES) > 0
    assert w.host_to_device == w.tier_bytes(HOST) + w.file_reads
    assert w.sources[families["14b"][0]] == {DEVICE: one}  # the base first, whole on the device
    assert "8 worker(s) on 1 machine(s), 1 GPU each (80 GiB per GPU)" in lines[0]


def test_70b_fits_no_80gib_gpu_and_the_plan_refuses_with_the_numbers(families, tmp_path):
    cfg = _config(tmp_path, families["70b"], type="ray", workers=8, gpus_per_worker=1, storage_dtype="bfloat16")
    plan, lines = plan_for_file(cfg, device_memory=80 * GIB, host_memory=512 * GIB)
    assert not plan.fits
    assert plan.worker.model_bytes == 2 * PARAMS["70b"]
    assert "does not fit: the model instance (131 GiB in bfloat16) and the reserve for activations (8 GiB) need " \
           "139 GiB, but the device has 80 GiB per worker" in "\n".join(lines)
    result = CliRunner().invoke(app, ["plan", str(cfg), "--device-memory", "80GiB", "--host-memory", "512GiB"])
    assert result.exit_code == 1 and "does not fit" in result.output


def test_70b_on_cpu_workers_keeps_what_fits_in_host_memory_and_maps_the_rest(families, tmp_path):
    cfg = _config(tmp_path, families["70b"], type="ray", workers=2, storage_dtype="bfloat16")
    plan, _ = plan_for_file(cfg, host_memory=512 * GIB)
    w = plan.worker
    one = 2 * PARAMS["70b"]
    reserve = 512 * GIB // 20
    capacity = 512 * GIB - (one + reserve)  # the other worker's instance; the sources are one shared copy
    assert plan.fits and plan.shared_on_host and w.capacity == capacity
    assert w.tier_bytes(DEVICE) + w.tier_bytes(FILES) == 4 * one
    assert w.tier_bytes(FILES) > 0 and w.tier_bytes(DEVICE) <= capacity - reserve - one
    assert w.host_to_device == 0 and w.file_reads == w.tier_bytes(FILES)


def test_the_cli_prints_the_plan(families, tmp_path):
    cfg = _config(tmp_path, families["7b"], device="cuda", storage_dtype="bfloat16")
    result = CliRunner().invoke(app, ["plan", str(cfg), "--device-memory", "80GiB", "--host-memory", "512GiB"])
    assert result.exit_code == 0, result.output
    assert f"base {families['7b'][0]} (bfloat16): 12.6 GiB device" in result.output


def test_first_fit_and_sizes():
    slots = [Slot("a", "x", 6, 6), Slot("a", "y", 5, 5), Slot("b", "x", 3, 3), Slot("b", "y", 9, 9)]
    assert place(slots, [(DEVICE, 9), (HOST, 5)]) == {("a", "x"): DEVICE, ("a", "y"): HOST, ("b", "x"): DEVICE,
                                                       ("b", "y"): FILES}
    assert parse_bytes("80GiB") == 80 * GIB and parse_bytes("80GB") == 80 * 10**9 and parse_bytes("1.5T") == 1.5 * 2**40
    with pytest.raises(Exception, match="--host-memory: 'lots' is not a size"):
        parse_bytes("lots", what="--host-memory")


def test_a_config_without_sources_is_refused_by_name():
    config = RunConfig.model_validate({
        "name": "f", "space": "ties", "objectives": [{"name": "s", "direction": "maximize"}],
        "budget": {"evaluations": 1}, "runner": {"type": "function", "target": "m:f"}})
    with pytest.raises(Exception, match="run config 'f': no 'sources' to plan"):
        make_plan(config, host_memory=GIB)


@pytest.mark.parametrize("method,per_entry", [("ties", 1), ("breadcrumbs_ties", 1), ("della", 2),
                                              ("task_arithmetic", 0), ("dare_ties", 0)])
def test_the_plan_counts_the_source_only_tables_of_the_spaces_method(families, tmp_path, method, per_entry):
    cfg = _config(tmp_path, families["7b"], device="cuda", storage_dtype="bfloat16")
    data = yaml.safe_load(cfg.read_text())
    data["space"] = {"kind": "ps", "method": method}
    cfg.write_text(yaml.safe_dump(data))
    plan, lines = plan_for_file(cfg, device_memory=200 * GIB, host_memory=512 * GIB)
    w = plan.worker
    assert w.tables == per_entry * 3 * PARAMS["7b"]  # every task vector held: one table entry per parameter
    assert w.headroom == 200 * GIB - 5 * 2 * PARAMS["7b"] - w.tables
    assert ("source-only tables of the held task vectors" in "\n".join(lines)) == bool(per_entry)
