"""Checkpoint I/O: open Hugging Face model folders lazily, validate them, stream merged weights to disk.

The names below are imported on first use (PEP 562), so that importing a torch-free module of this
package (headers, dtype names) does not import the writer and, through it, torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evomerge.io.checkpoint import Checkpoint, TensorInfo, check_compatible, check_finite
    from evomerge.io.dtypes import parse_dtype
    from evomerge.io.writer import ShardedWriter, atomic_output_dir, copy_model_files

_HOME = {
    "Checkpoint": "evomerge.io.checkpoint",
    "TensorInfo": "evomerge.io.checkpoint",
    "check_compatible": "evomerge.io.checkpoint",
    "check_finite": "evomerge.io.checkpoint",
    "parse_dtype": "evomerge.io.dtypes",
    "ShardedWriter": "evomerge.io.writer",
    "atomic_output_dir": "evomerge.io.writer",
    "copy_model_files": "evomerge.io.writer",
}
__all__ = [
    "Checkpoint",
    "ShardedWriter",
    "TensorInfo",
    "atomic_output_dir",
    "check_compatible",
    "check_finite",
    "copy_model_files",
    "parse_dtype",
]


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
