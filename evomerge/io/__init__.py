"""Checkpoint I/O: open Hugging Face model folders lazily, validate them, stream merged weights to disk."""

from evomerge.io.checkpoint import Checkpoint, TensorInfo, check_compatible, check_finite
from evomerge.io.dtypes import parse_dtype
from evomerge.io.writer import ShardedWriter, atomic_output_dir, copy_model_files

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
