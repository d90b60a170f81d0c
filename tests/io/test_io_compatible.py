"""check_compatible: sources that cannot be merged tensor by tensor are refused, first mismatch named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from evomerge.errors import CheckpointError
from evomerge.io import Checkpoint, check_compatible


def test_a_base_and_its_expert_are_compatible(llama: Path, expert: Path, sharded_llama: Path) -> None:
    check_compatible([Checkpoint.open(llama), Checkpoint.open(expert), Checkpoint.open(sharded_llama)])
    check_compatible([Checkpoint.open(llama)])


def test_different_architecture_is_refused_naming_both_folders(tmp_path: Path, llama: Path, expert: Path) -> None:
    other = tmp_path / "mistral"
    shutil.copytree(expert, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="architectures differ") as err:
        check_compatible([Checkpoint.open(llama), Checkpoint.open(other)])
    assert str(llama) in str(err.value) and str(other) in str(err.value)
    assert "MistralForCausalLM" in str(err.value)


def test_missing_tensor_is_named_with_the_folder_lacking_it(tmp_path: Path, llama: Path) -> None:
    tensors = load_file(llama / "model.safetensors")
    dropped = "model.layers.1.mlp.up_proj.weight"
    del tensors[dropped]
    other = tmp_path / "partial"
    other.mkdir()
    shutil.copy(llama / "config.json", other / "config.json")
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"'{dropped}' is missing from {other}") as err:
        check_compatible([Checkpoint.open(llama), Checkpoint.open(other)])
    assert str(llama) in str(err.value)
    with pytest.raises(CheckpointError, match=f"'{dropped}' is missing from {other}"):
        check_compatible([Checkpoint.open(other), Checkpoint.open(llama)])  # extra tensors count too


def test_names_restricts_the_check_to_the_tensors_a_merge_uses(tmp_path: Path, llama: Path) -> None:
    tensors = load_file(llama / "model.safetensors")
    del tensors["lm_head.weight"]
    other = tmp_path / "headless"
    other.mkdir()
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    check_compatible([Checkpoint.open(llama), Checkpoint.open(other)], names=list(tensors))
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' is missing"):
        check_compatible([Checkpoint.open(llama), Checkpoint.open(other)], names=["lm_head.weight"])


def test_shape_mismatch_names_tensor_both_shapes_and_both_folders(llama: Path, wide_llama: Path) -> None:
    expected = r"'model\.layers\.0\.mlp\.down_proj\.weight' has shape \(32, 64\)"
    with pytest.raises(CheckpointError, match=expected) as err:
        check_compatible([Checkpoint.open(llama), Checkpoint.open(wide_llama)])
    message = str(err.value)
    assert "(32, 96)" in message and str(llama) in message and str(wide_llama) in message


def test_vocab_mismatch_gets_its_own_message_with_what_to_do(llama: Path, big_vocab_llama: Path) -> None:
    with pytest.raises(CheckpointError, match="vocabulary sizes differ") as err:
        check_compatible([Checkpoint.open(llama), Checkpoint.open(big_vocab_llama)])
    message = str(err.value)
    assert "64" in message and "96" in message and str(llama) in message and str(big_vocab_llama) in message
    assert "share a tokenizer" in message and "tokenizer_source: union" in message


def test_vocab_mismatch_is_found_from_embedding_rows_when_configs_are_absent(
    tmp_path: Path, llama: Path, big_vocab_llama: Path
) -> None:
    a = Checkpoint.open(llama / "model.safetensors")
    b_dir = tmp_path / "noconfig"
    b_dir.mkdir()
    shutil.copy(big_vocab_llama / "model.safetensors", b_dir / "model.safetensors")
    a.config = {}
    with pytest.raises(CheckpointError, match="vocabulary sizes differ") as err:
        check_compatible([a, Checkpoint.open(b_dir)])
    assert "rows of" in str(err.value)
