"""PEFT LoRA folders read without peft; every bad adapter is refused with the file and tensor named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from lora_helpers import PREFIX, adapter_tensors, write_adapter

from evomerge.errors import CheckpointError
from evomerge.lora import LoraAdapter, open_adapters

Q0 = "model.layers.0.self_attn.q_proj"


def test_adapter_reads_pairs_rank_scaling_and_base(tiny_base, tiny_adapters):
    ad = LoraAdapter.open(tiny_adapters[0])
    tensors = adapter_tensors(tiny_base, seed=10)
    assert ad.rank == 2 and ad.scaling == 4 / 2 and ad.base_model == str(tiny_base)
    assert ad.target_modules == ("q_proj", "v_proj")
    assert len(ad.pairs) == 4  # 2 layers x (q, v)
    assert torch.equal(ad.pairs[Q0].a, tensors[f"{PREFIX}{Q0}.lora_A.weight"])
    assert torch.equal(ad.pairs[Q0].b, tensors[f"{PREFIX}{Q0}.lora_B.weight"])
    assert ad.pairs[Q0].weight_name == f"{Q0}.weight"


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_base, tmp_path):
    ad = LoraAdapter.open(write_adapter(tmp_path / "rs", tiny_base, rank=4, lora_alpha=8, use_rslora=True))
    assert ad.scaling == 8 / math.sqrt(4)


def test_the_prebuilt_zoo_adapters_are_peft_folders_of_the_zoo_base():
    zoo = Path(__file__).resolve().parents[2] / "zoo" / "tinylm"
    adapters = open_adapters(zoo / "base", [zoo / f"lora_{s}" for s in ("math_a", "lang_b", "list_a")])
    for ad in adapters:
        assert ad.config["peft_type"] == "LORA" and ad.rank == 8 and ad.scaling == 2.0
        assert len(ad.pairs) == 4 * 7  # 4 layers x q, k, v, o, gate, up, down
        assert ad.base_model == "zoo/tinylm/base"


def test_missing_b_tensor_names_the_file_and_the_tensor(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    del tensors[f"{PREFIX}{Q0}.lora_B.weight"]
    folder = write_adapter(tmp_path / "bad", tiny_base, tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        LoraAdapter.open(folder)
    assert str(folder / "adapter_model.safetensors") in str(err.value)
    assert f"{PREFIX}{Q0}.lora_B.weight is missing" in str(err.value)


def test_a_rank_other_than_the_configs_names_the_tensors(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    tensors[f"{PREFIX}{Q0}.lora_A.weight"] = torch.zeros(3, 32)
    folder = write_adapter(tmp_path / "bad", tiny_base, tensors=tensors)
    with pytest.raises(CheckpointError, match=rf"{PREFIX}{Q0}\.lora_A\.weight \(3, 32\).*rank r = 2"):
        LoraAdapter.open(folder)


def test_an_update_whose_shape_differs_from_the_base_weight_is_refused(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    tensors[f"{PREFIX}{Q0}.lora_A.weight"] = torch.zeros(2, 48)  # the base's q_proj takes 32 inputs
    folder = write_adapter(tmp_path / "bad", tiny_base, tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        open_adapters(tiny_base, [folder])
    msg = str(err.value)
    assert str(folder / "adapter_model.safetensors") in msg and f"{Q0}.weight" in msg and str(tiny_base) in msg


def test_a_module_the_base_lacks_is_refused(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    tensors[f"{PREFIX}model.layers.7.self_attn.q_proj.lora_A.weight"] = torch.zeros(2, 32)
    tensors[f"{PREFIX}model.layers.7.self_attn.q_proj.lora_B.weight"] = torch.zeros(32, 2)
    folder = write_adapter(tmp_path / "bad", tiny_base, tensors=tensors)
    with pytest.raises(CheckpointError, match=r"has no tensor 'model\.layers\.7\.self_attn\.q_proj\.weight'"):
        open_adapters(tiny_base, [folder])


def test_adapters_of_different_bases_are_refused_naming_both_files(tiny_base, tmp_path):
    one = write_adapter(tmp_path / "one", tiny_base)
    other = write_adapter(tmp_path / "two", tiny_base, seed=1, base_model_name_or_path="meta-llama/Llama-3-8B")
    with pytest.raises(CheckpointError) as err:
        open_adapters(tiny_base, [one, other])
    msg = str(err.value)
    assert "base_model_name_or_path differs" in msg
    assert str(one / "adapter_config.json") in msg and str(other / "adapter_config.json") in msg


def test_an_adapter_declaring_another_base_folder_is_refused(tiny_base, tmp_path):
    elsewhere = tmp_path / "other_base"
    elsewhere.mkdir()
    folder = write_adapter(tmp_path / "ad", tiny_base, base_model_name_or_path=str(elsewhere))
    with pytest.raises(CheckpointError, match="trained on"):
        open_adapters(tiny_base, [folder])


def test_adapters_with_different_target_modules_are_refused(tiny_base, tmp_path):
    one = write_adapter(tmp_path / "one", tiny_base)
    other = write_adapter(tmp_path / "two", tiny_base, targets=("q_proj", "k_proj"))
    with pytest.raises(CheckpointError, match="do not adapt the same modules"):
        open_adapters(tiny_base, [one, other])


def test_adapters_with_different_ranks_are_refused(tiny_base, tmp_path):
    one = write_adapter(tmp_path / "one", tiny_base)
    other = write_adapter(tmp_path / "two", tiny_base, rank=4, lora_alpha=8)
    with pytest.raises(CheckpointError, match="rank/scaling differ"):
        open_adapters(tiny_base, [one, other])


def test_a_tensor_outside_the_target_modules_is_refused(tiny_base, tmp_path):
    folder = write_adapter(tmp_path / "ad", tiny_base, tensors=adapter_tensors(tiny_base, targets=("q_proj", "o_proj")),
                           targets=("q_proj",))
    with pytest.raises(CheckpointError, match="o_proj.*target_modules"):
        LoraAdapter.open(folder)


def test_other_tensors_and_peft_types_and_missing_files_are_refused(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    tensors[f"{PREFIX}{Q0}.lora_magnitude_vector"] = torch.ones(32)
    with pytest.raises(CheckpointError, match="lora_magnitude_vector.*not a LoRA A/B weight"):
        LoraAdapter.open(write_adapter(tmp_path / "dora", tiny_base, tensors=tensors))
    with pytest.raises(CheckpointError, match="peft_type is 'IA3'"):
        LoraAdapter.open(write_adapter(tmp_path / "ia3", tiny_base, peft_type="IA3"))
    with pytest.raises(CheckpointError, match=r"adapter_config\.json: missing"):
        LoraAdapter.open(tmp_path)
    folder = write_adapter(tmp_path / "nofile", tiny_base)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: missing"):
        LoraAdapter.open(folder)


def test_a_truncated_weights_file_is_reported_by_path(tiny_base, tmp_path):
    folder = write_adapter(tmp_path / "cut", tiny_base)
    file = folder / "adapter_model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=rf"{file}.*truncated"):
        LoraAdapter.open(folder)


def test_nan_in_a_factor_names_the_tensor(tiny_base, tmp_path):
    tensors = adapter_tensors(tiny_base)
    tensors[f"{PREFIX}{Q0}.lora_B.weight"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=rf"{PREFIX}{Q0}\.lora_B\.weight holds NaN"):
        LoraAdapter.open(write_adapter(tmp_path / "nan", tiny_base, tensors=tensors))


def test_malformed_config_json_names_the_file(tiny_base, tmp_path):
    folder = write_adapter(tmp_path / "json", tiny_base)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"adapter_config\.json: not valid JSON"):
        LoraAdapter.open(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 0, "lora_alpha": 1}))
    with pytest.raises(CheckpointError, match="'r' must be a positive integer"):
        LoraAdapter.open(folder)
