"""parse_dtype: the dtype names users write in configs."""

from __future__ import annotations

import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.io import parse_dtype


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
