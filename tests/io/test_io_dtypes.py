"""parse_dtype: the dtype names users write in configs; the torch-free dtype table headers are read with."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from evomerge.errors import ConfigError
from evomerge.io import Checkpoint, parse_dtype
from evomerge.io.dtype_table import CODES, parse_dtype_name
from evomerge.model_dtype import checkpoint_dtype_name
from evomerge.models import checkpoint_dtype


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        (" bf16 ", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("torch.bfloat16", torch.bfloat16),
        (torch.float16, torch.float16),
    ],
)
def test_parse_dtype_accepts_the_three_storage_dtypes_by_any_common_name(text: str, dtype: torch.dtype) -> None:
    assert parse_dtype(text) == dtype


@pytest.mark.parametrize("text", ["int8", "float64", "fp8", "", "bfloat"])
def test_parse_dtype_rejects_anything_else_naming_the_choices(text: str) -> None:
    with pytest.raises(ConfigError, match=r"bfloat16 \(bf16\)"):
        parse_dtype(text)


# ---------------------------------------------------------------- the torch-free table (headers without torch)
def test_the_table_names_torchs_dtypes_with_their_sizes() -> None:
    for name, itemsize in CODES.values():
        assert getattr(torch, name).itemsize == itemsize, name


@pytest.mark.parametrize("dtype", [getattr(torch, name) for name, _ in CODES.values()], ids=str)
def test_a_header_written_by_safetensors_reads_back_as_the_torch_dtype(tmp_path, dtype: torch.dtype) -> None:
    tensor = torch.zeros((3, 5), dtype=torch.float32).to(dtype)
    save_file({"w": tensor}, tmp_path / "model.safetensors")
    info = Checkpoint.open(tmp_path).info("w")
    assert (info.dtype_name, info.itemsize, info.dtype) == (str(dtype).removeprefix("torch."), tensor.itemsize, dtype)
    assert info.nbytes == 15 * tensor.itemsize


@pytest.mark.parametrize("text", ["fp32", " BF16 ", "torch.float16", "bfloat16"])
def test_dtype_names_and_torch_dtypes_parse_alike(text: str) -> None:
    assert getattr(torch, parse_dtype_name(text)) == parse_dtype(text)


@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16, torch.float16])
def test_the_checkpoint_dtype_by_name_is_the_torch_one(tmp_path, stored: torch.dtype) -> None:
    save_file({"ids": torch.zeros(4, dtype=torch.int64), "w": torch.zeros(2, 2, dtype=stored)},
              tmp_path / "model.safetensors")
    assert checkpoint_dtype_name(tmp_path) == str(stored).removeprefix("torch.")
    assert checkpoint_dtype(tmp_path) == stored
