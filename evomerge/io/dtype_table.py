"""Dtypes as names and byte sizes, without torch: what header readers and memory plans need.

Indexing a checkpoint or planning a search reads only headers, so it must not
pay torch's import (seconds on a small machine). This table is the one source
of truth: `evomerge.io.dtypes` builds the torch dtype maps from it, so a name
here and a torch dtype there cannot disagree.
"""

from __future__ import annotations

from evomerge.errors import ConfigError

# safetensors' dtype codes (huggingface/safetensors `Dtype`) -> (torch's name for the dtype, bytes per element)
CODES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}
ITEMSIZE: dict[str, int] = {name: size for name, size in CODES.values()}
FLOATING: frozenset[str] = frozenset({"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})

# The dtypes a merged checkpoint (or a model instance) is kept in, by every name users write in YAML.
_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def parse_dtype_name(text: str) -> str:
    """'bf16', 'BF16', 'torch.bfloat16' -> 'bfloat16'; only float32, bfloat16 and float16 (ConfigError otherwise)."""
    key = str(text).strip().lower().removeprefix("torch.")
    if key in _NAMES:
        return _NAMES[key]
    raise ConfigError(f"unknown dtype {text!r}: use one of float32 (fp32), bfloat16 (bf16) or float16 (fp16)")


def dtype_name(dtype: object) -> str:
    """The name of a dtype given as a name or as a torch dtype ('torch.float32' -> 'float32')."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str):
    """The torch dtype called ``name`` (imports torch: only for code that builds tensors)."""
    import torch

    return getattr(torch, name)
