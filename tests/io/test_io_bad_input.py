"""Bad checkpoints are refused with a message naming the file (and tensor), before any work is done."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import CheckpointError
from evomerge.io import Checkpoint, check_finite


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint") as err:
        Checkpoint.open(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_folder_without_weights_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"no weights found .*model\.safetensors") as err:
        Checkpoint.open(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_safetensors_cut_in_half_is_reported_at_open_naming_the_file_and_last_tensor(
    tmp_path: Path, llama: Path
) -> None:
    folder = _copy(llama, tmp_path / "cut")
    file = folder / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        Checkpoint.open(folder)
    assert str(file) in str(err.value)
    assert "tensor '" in str(err.value)


def test_corrupted_header_is_reported_at_open_naming_the_file(tmp_path: Path, llama: Path) -> None:
    folder = _copy(llama, tmp_path / "corrupt")
    file = folder / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[8:24] = b"#" * 16  # scribble over the start of the JSON header
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not UTF-8 JSON") as err:
        Checkpoint.open(folder)
    assert str(file) in str(err.value)


def test_header_length_beyond_the_file_is_reported(tmp_path: Path, llama: Path) -> None:
    folder = _copy(llama, tmp_path / "len")
    file = folder / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header length") as err:
        Checkpoint.open(folder)
    assert str(file) in str(err.value)


def test_file_truncated_after_open_is_reported_at_read_naming_file_and_tensor(tmp_path: Path, llama: Path) -> None:
    folder = _copy(llama, tmp_path / "later")
    ck = Checkpoint.open(folder)
    file = folder / "model.safetensors"
    os.truncate(file, file.stat().st_size // 2)
    name = ck.names[-1]
    with pytest.raises(CheckpointError, match="changed size") as err:
        ck.get(name)
    assert str(file) in str(err.value) and repr(name) in str(err.value)


def test_header_corrupted_after_open_is_reported_at_read_naming_file_and_tensor(tmp_path: Path, llama: Path) -> None:
    folder = _copy(llama, tmp_path / "scribbled")
    ck = Checkpoint.open(folder)
    file = folder / "model.safetensors"
    with open(file, "r+b") as f:  # same size, garbage header
        f.seek(8)
        f.write(b"#" * 16)
    name = ck.names[0]
    with pytest.raises(CheckpointError, match="cannot read tensor") as err:
        ck.get(name)
    assert str(file) in str(err.value) and repr(name) in str(err.value)


def test_index_pointing_to_a_missing_shard_names_index_and_shard(tmp_path: Path, sharded_llama: Path) -> None:
    folder = _copy(sharded_llama, tmp_path / "gap")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(CheckpointError, match="missing") as err:
        Checkpoint.open(folder)
    assert "model.safetensors.index.json" in str(err.value) and shard in str(err.value)


def test_index_mapping_a_tensor_to_the_wrong_shard_names_tensor(tmp_path: Path, sharded_llama: Path) -> None:
    folder = _copy(sharded_llama, tmp_path / "wrong")
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][name] = shards[1]
    path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="does not contain it") as err:
        Checkpoint.open(folder)
    assert repr(name) in str(err.value) and shards[1] in str(err.value)


class _Payload:
    """Unpickling this would call a function: what a malicious checkpoint does."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_malicious_pickle_is_refused_with_a_conversion_how_to(tmp_path: Path) -> None:
    torch.save({"model.embed_tokens.weight": _Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to unpickle") as err:
        Checkpoint.open(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "pytorch_model.bin") in message
    assert "posix.system" in message and "safetensors" in message and "save_file" in message


@pytest.mark.parametrize("seed", range(40))
def test_unreadable_bin_is_refused_naming_the_file(tmp_path: Path, seed: int) -> None:
    # random bytes make the unpickler fail in many ways (IndexError, TypeError, EOFError...): all are "corrupt"
    (tmp_path / "pytorch_model.bin").write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError, match="corrupt") as err:
        Checkpoint.open(tmp_path)
    assert str(tmp_path / "pytorch_model.bin") in str(err.value)


def test_truncated_bin_is_refused_naming_the_file(tmp_path: Path, llama: Path) -> None:
    torch.save(load_file(llama / "model.safetensors"), tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        Checkpoint.open(tmp_path)
    assert str(tmp_path / "pytorch_model.bin") in str(err.value)


def test_bin_holding_non_tensors_is_refused_naming_the_entry(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="entry 'step' is a int") as err:
        Checkpoint.open(tmp_path)
    assert str(tmp_path / "pytorch_model.bin") in str(err.value)


def test_config_that_is_not_json_is_named(tmp_path: Path, llama: Path) -> None:
    folder = _copy(llama, tmp_path / "cfg")
    (folder / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON") as err:
        Checkpoint.open(folder)
    assert str(folder / "config.json") in str(err.value)


def test_check_finite_counts_nan_and_inf_naming_tensor_and_file(tmp_path: Path) -> None:
    t = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), float("nan")], dtype=torch.bfloat16)
    with pytest.raises(CheckpointError, match=r"'layers.0.w' has 2 NaN, 1 \+inf and 1 -inf values out of 5") as err:
        check_finite(t, name="layers.0.w", path=tmp_path / "model.safetensors")
    assert str(tmp_path / "model.safetensors") in str(err.value)


def test_check_finite_accepts_finite_and_integer_tensors(tmp_path: Path) -> None:
    check_finite(torch.randn(10), name="w", path=tmp_path)
    check_finite(torch.arange(10), name="ids", path=tmp_path)
