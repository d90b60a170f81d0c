"""Torch dtypes <-> safetensors dtype codes, and the dtype names users write in YAML.

One table, so the reader, the writer and the config parser cannot disagree on
what "BF16" or "fp16" means.
"""

from __future__ import annotations

import torch

from evomerge.errors import ConfigError

# safetensors' dtype codes (huggingface/safetensors `Dtype`), restricted to those torch has.
_CODES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
CODE_TO_DTYPE: dict[str, torch.dtype] = {
    code: getattr(torch, attr) for code, attr in _CODES.items() if hasattr(torch, attr)
}
DTYPE_TO_CODE: dict[torch.dtype, str] = {dtype: code for code, dtype in CODE_TO_DTYPE.items()}

_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(text: str | torch.dtype) -> torch.dtype:
    """The output dtype a user asked for: float32/fp32, bfloat16/bf16 or float16/fp16.

    Only the three floating dtypes a merged checkpoint is stored in; anything
    else is a typo in a config, reported as such.
    """
    if isinstance(text, torch.dtype):
        if text in _NAMES.values():
            return text
        key = str(text)
    else:
        key = str(text).strip().lower().removeprefix("torch.")
        if key in _NAMES:
            return _NAMES[key]
    raise ConfigError(f"unknown dtype {text!r}: use one of float32 (fp32), bfloat16 (bf16) or float16 (fp16)")

