"""`evomerge plan` for a worker split over several GPUs: the layer split and each GPU's bytes, from the shapes.

Header-only Llama checkpoints with a real config.json (the split is computed
on a meta model built from it): a 70B family on 2 x 80 GiB, a 7B one whose
float32 task vectors all fit beside their layers, and a 70B that fits no pair
of 40 GiB GPUs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from transformers import LlamaConfig
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.exec.memory_plan import DEVICE, FILES, HOST, plan_for_file
from evomerge.testing import llama_shapes, write_header_only_checkpoint, write_plan_config

GIB = 2**30
SIZES = {
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    "70b": dict(hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8, vocab=128256),
}


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[str, list[str], dict[str, tuple[int, ...]]]]:
    root = tmp_path_factory.mktemp("split_sizes")
    out = {}
    for size, d in SIZES.items():
        shapes = llama_shapes(**d)
        config = LlamaConfig(hidden_size=d["hidden"], intermediate_size=d["intermediate"],
                             num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                             num_key_value_heads=d["kv_heads"], vocab_size=d["vocab"], tie_word_embeddings=False,
                             dtype="bfloat16").to_dict()
        folders = [root / size / n for n in ("base", "chat", "math", "code")]
        for folder in folders:
            write_header_only_checkpoint(folder, shapes, config=config)
        out[size] = (str(folders[0]), [str(f) for f in folders[1:]], shapes)
    return out


def _config(tmp_path: Path, family, **runner) -> Path:
    return write_plan_config(tmp_path, family[0], family[1], **runner)


def _module_of(name: str) -> str:
    layer = re.match(r"(model\.layers\.\d+)\.", name)
    return layer.group(1) if layer else name.rsplit(".", 1)[0]


def _numel_per_gpu(plan, shapes) -> list[int]:
    """Parameters per GPU, summed from the checkpoint shapes over the modules the plan puts there."""
    where = {m: d.index for d in plan.worker.devices for m in d.modules}
    out = [0] * len(plan.worker.devices)
    for name, shape in shapes.items():
        out[where[_module_of(name)]] += math.prod(shape)
    return out


def test_70b_bf16_splits_over_two_80gib_gpus_and_each_gpus_bytes_are_the_sums_of_its_layers(families, tmp_path):
    family = families["70b"]
    plan, lines = plan_for_file(_config(tmp_path, family, device="cuda", gpus_per_worker=2,
                                        storage_dtype="bfloat16"), device_memory=80 * GIB, host_memory=512 * GIB)
    w = plan.worker
    assert plan.fits and len(w.devices) == 2
    layers = [[int(m.rsplit(".", 1)[1]) for m in d.modules if m.startswith("model.layers.")] for d in w.devices]
    assert layers[0] + layers[1] == list(range(80)) and layers[0] and layers[1]  # contiguous, whole layers, all
    numel = _numel_per_gpu(plan, family[2])
    assert [d.model_bytes for d in w.devices] == [2 * n for n in numel]
    assert w.model_bytes == 2 * sum(numel)
    for d in w.devices:  # the instance and the sources beside it leave the reserve free on each GPU
        assert d.model_bytes + d.source_bytes <= 80 * GIB - d.reserve == 72 * GIB and d.headroom >= 8 * GIB
    assert sum(d.source_bytes for d in w.devices) == w.tier_bytes(DEVICE)
    one = 2 * sum(math.prod(s) for s in family[2].values())
    assert w.tier_bytes(DEVICE) + w.tier_bytes(HOST) + w.tier_bytes(FILES) == 4 * one
    text = "\n".join(lines)
    assert "model instance (bfloat16): 131 GiB on the device, split over 2 GPUs" in text
    assert re.search(r"GPU 0 \(model\.embed_tokens, model\.layers\.0-\d+\): model ", text)
    assert re.search(r"GPU 1 \(model\.layers\.\d+-79, model\.norm, model\.rotary_emb, lm_head\)", text)


def test_7b_float32_sources_all_fit_beside_their_layers_on_two_gpus(families, tmp_path):
    family = families["7b"]
    plan, _ = plan_for_file(_config(tmp_path, family, device="cuda", gpus_per_worker=2),
                            device_memory=80 * GIB, host_memory=512 * GIB)
    w = plan.worker
    numel = _numel_per_gpu(plan, family[2])
    assert plan.fits and w.tier_bytes(HOST) == 0 and w.tier_bytes(FILES) == 0
    # each GPU: its layers in bf16, and four float32 copies of them (base + 3 task vectors)
    assert [(d.model_bytes, d.source_bytes) for d in w.devices] == [(2 * n, 4 * 4 * n) for n in numel]
    assert all(d.headroom >= d.reserve == 8 * GIB for d in w.devices)


def test_the_ray_plan_splits_each_worker_the_same_way(families, tmp_path):
    local, _ = plan_for_file(_config(tmp_path, families["7b"], device="cuda", gpus_per_worker=2),
                             device_memory=80 * GIB, host_memory=512 * GIB)
    ray, lines = plan_for_file(_config(tmp_path, families["7b"], type="ray", workers=4, gpus_per_worker=2),
                               device_memory=80 * GIB, host_memory=512 * GIB)
    assert [d.modules for d in ray.worker.devices] == [d.modules for d in local.worker.devices]
    assert "4 worker(s) on 1 machine(s), 2 GPU each (80 GiB per GPU)" in lines[0]
    _, listed_lines = plan_for_file(_config(tmp_path, families["7b"], type="ray", workers=4,
                                            devices=["cuda:0", "cuda:1"]),
                                    device_memory=80 * GIB, host_memory=512 * GIB)
    assert listed_lines == lines  # runner.devices: the same two GPUs per actor, the same plan
    cpu, cpu_lines = plan_for_file(_config(tmp_path, families["7b"], type="ray", workers=2, devices=["cpu", "cpu"]),
                                   host_memory=512 * GIB)
    assert not cpu.shared_on_host and "sources shared" not in cpu_lines[0]  # a split actor reads its own sources
    assert any("the split over CPU devices" in line for line in cpu_lines)


def test_a_70b_that_fits_no_pair_of_40gib_gpus_is_refused_with_the_numbers(families, tmp_path):
    cfg = _config(tmp_path, families["70b"], device="cuda", gpus_per_worker=2, storage_dtype="bfloat16")
    result = CliRunner().invoke(app, ["plan", str(cfg), "--device-memory", "40GiB", "--host-memory", "512GiB"])
    assert result.exit_code == 1
    assert "does not fit: model" in result.output
    assert "the model instance (131 GiB in bfloat16) does not fit 2 devices of 36 GiB, 36 GiB" in result.output
