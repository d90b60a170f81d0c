"""Torch dtypes <-> safetensors dtype codes, and the dtype names users write in YAML.

Built from the torch-free table in `evomerge.io.dtype_table`, so the reader,
the writer and the config parser cannot disagree on what "BF16" or "fp16" means.
"""

from __future__ import annotations

import torch

from evomerge.io.dtype_table import CODES, parse_dtype_name

CODE_TO_DTYPE: dict[str, torch.dtype] = {
    code: getattr(torch, name) for code, (name, _) in CODES.items() if hasattr(torch, name)
}
DTYPE_TO_CODE: dict[torch.dtype, str] = {dtype: code for code, dtype in CODE_TO_DTYPE.items()}


def parse_dtype(text: str | torch.dtype) -> torch.dtype:
    """The output dtype a user asked for: float32/fp32, bfloat16/bf16 or float16/fp16.

    Only the three floating dtypes a merged checkpoint is stored in; anything
    else is a typo in a config, reported as such.
    """
    return getattr(torch, parse_dtype_name(str(text)))
