"""Checkpoint.open: every layout a Hugging Face folder comes in, read lazily and exactly."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.errors import CheckpointError
from evomerge.io import Checkpoint, TensorInfo


def test_open_indexes_a_single_file_folder_with_shapes_dtypes_and_config(llama: Path) -> None:
    with Checkpoint.open(llama) as ck:
        expected = load_file(llama / "model.safetensors")
        assert set(ck.names) == set(expected) and len(ck) == len(expected)
        info = ck.info("model.embed_tokens.weight")
        assert info == TensorInfo("model.embed_tokens.weight", (64, 32), torch.float32, llama / "model.safetensors",
                                  64 * 32 * 4)
        assert ck.config["model_type"] == "llama"
        assert ck.num_layers == 2
        assert ck.total_bytes == sum(t.numel() * t.element_size() for t in expected.values())
        assert "lm_head.weight" in ck and "nope" not in ck
        for name, tensor in expected.items():
            assert torch.equal(ck.get(name), tensor)


def test_names_follow_file_order_and_are_stable_across_opens(llama: Path) -> None:
    assert Checkpoint.open(llama).names == Checkpoint.open(llama).names
    assert Checkpoint.open(llama).names == list(load_file(llama / "model.safetensors"))


def test_sharded_folder_opens_to_the_same_tensors_as_the_single_file(llama: Path, sharded_llama: Path) -> None:
    single, sharded = Checkpoint.open(llama), Checkpoint.open(sharded_llama)
    assert len(sharded.files) > 1
    index = json.loads((sharded_llama / "model.safetensors.index.json").read_text())
    assert sharded.names == list(index["weight_map"])
    assert sorted(single.names) == sorted(sharded.names)
    for name in single.names:
        assert sharded.info(name).file.name == index["weight_map"][name]
        assert torch.equal(single.get(name), sharded.get(name))


def test_folder_of_several_safetensors_without_index_is_their_union(tmp_path: Path, llama: Path) -> None:
    tensors = load_file(llama / "model.safetensors")
    names = list(tensors)
    save_file({n: tensors[n] for n in names[:5]}, tmp_path / "a.safetensors", metadata={"format": "pt"})
    save_file({n: tensors[n] for n in names[5:]}, tmp_path / "b.safetensors", metadata={"format": "pt"})
    ck = Checkpoint.open(tmp_path)
    assert sorted(ck.names) == sorted(names)
    assert ck.info(names[7]).file == tmp_path / "b.safetensors"
    assert ck.config == {} and ck.num_layers == 2  # inferred from layers.N names


def test_a_path_to_one_safetensors_file_opens_that_file_with_its_folder_config(llama: Path) -> None:
    ck = Checkpoint.open(llama / "model.safetensors")
    assert len(ck) == len(Checkpoint.open(llama)) and ck.config["model_type"] == "llama"
    assert ck.path == llama / "model.safetensors" and ck.folder == llama == Checkpoint.open(llama).folder


def test_get_casts_and_moves(llama: Path) -> None:
    ck = Checkpoint.open(llama)
    t = ck.get("lm_head.weight", dtype=torch.bfloat16, device="cpu")
    assert t.dtype == torch.bfloat16
    assert torch.equal(t, ck.get("lm_head.weight").to(torch.bfloat16))


def test_missing_tensor_error_names_tensor_and_folder(llama: Path) -> None:
    ck = Checkpoint.open(llama)
    with pytest.raises(CheckpointError, match=r"no tensor 'model\.nope'") as err:
        ck.info("model.nope")
    assert str(llama) in str(err.value)
    with pytest.raises(CheckpointError, match=r"model\.nope"):
        ck.get("model.nope")


def test_opening_reads_headers_only_not_tensor_data(tmp_path: Path) -> None:
    """An 8 GiB sparse file opens at once and without memory: reading its data would take both."""
    huge = 8 * 2**30
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "small": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "huge": {"dtype": "BF16", "shape": [huge // 2], "data_offsets": [16, 16 + huge]},
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack("<4f", 1, 2, 3, 4))
        f.truncate(8 + len(header) + 16 + huge)  # sparse: no blocks allocated
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    ck = Checkpoint.open(tmp_path)
    elapsed = time.perf_counter() - start
    assert ck.total_bytes == huge + 16 and ck.info("huge").shape == (huge // 2,)
    assert torch.equal(ck.get("small"), torch.tensor([1.0, 2.0, 3.0, 4.0]))  # one tensor, by memory map
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before < 2**30
    assert elapsed < 2


def test_bin_checkpoint_is_read_weights_only_and_by_name(tmp_path: Path, llama: Path) -> None:
    tensors = load_file(llama / "model.safetensors")
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    shutil.copy(llama / "config.json", tmp_path / "config.json")
    ck = Checkpoint.open(tmp_path)
    assert ck.names == list(tensors)
    assert ck.info("lm_head.weight").file == tmp_path / "pytorch_model.bin"
    for name, tensor in tensors.items():
        assert torch.equal(ck.get(name), tensor)


def test_sharded_bin_checkpoint_follows_its_index(tmp_path: Path, llama: Path) -> None:
    tensors = load_file(llama / "model.safetensors")
    names = list(tensors)
    torch.save({n: tensors[n] for n in names[:4]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({n: tensors[n] for n in names[4:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {n: f"pytorch_model-0000{1 if i < 4 else 2}-of-00002.bin" for i, n in enumerate(names)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ck = Checkpoint.open(tmp_path)
    assert ck.names == names and torch.equal(ck.get(names[-1]), tensors[names[-1]])


def test_safetensors_are_preferred_over_bin_in_the_same_folder(tmp_path: Path, llama: Path) -> None:
    shutil.copy(llama / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"never read")
    assert len(Checkpoint.open(tmp_path)) == len(Checkpoint.open(llama))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_updating_a_returned_tensor_in_place_changes_neither_later_reads_nor_the_file(
    tmp_path: Path, llama: Path, fmt: str
) -> None:
    if fmt == "bin":
        torch.save(load_file(llama / "model.safetensors"), tmp_path / "pytorch_model.bin")
        folder = tmp_path
    else:
        folder = llama
    ck = Checkpoint.open(folder)
    original = ck.get("lm_head.weight").clone()
    ck.get("lm_head.weight").add_(1.0)
    assert torch.equal(ck.get("lm_head.weight"), original)
    assert torch.equal(Checkpoint.open(folder).get("lm_head.weight"), original)


def test_reading_after_close_is_refused(llama: Path) -> None:
    with Checkpoint.open(llama) as ck:
        kept = ck.get("lm_head.weight")
    with pytest.raises(CheckpointError, match="closed"):
        ck.get("lm_head.weight")
    assert kept.abs().sum() > 0  # tensors already returned stay valid
