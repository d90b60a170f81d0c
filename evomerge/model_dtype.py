"""``runner.model_dtype`` resolved to a dtype *name* from checkpoint headers, without importing torch.

`evomerge plan` needs the model instance's bytes per element, not a torch
dtype; `evomerge.models` turns the same names into torch dtypes for the
workers, so the plan and the worker apply one rule.
"""

from __future__ import annotations

from pathlib import Path

from evomerge.io.dtype_table import parse_dtype_name


def checkpoint_dtype_name(path: str | Path) -> str:
    """The floating dtype a checkpoint's weights are stored in, from its header (mergekit's output rule).

    The first floating tensor of two or more bytes decides (a quantized, float8 or
    integer buffer does not); a checkpoint with none is float32.
    """
    from evomerge.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(path)
    try:
        for name in ckpt.names:
            info = ckpt.info(name)
            if info.is_floating and info.itemsize >= 2:
                return info.dtype_name
    finally:
        ckpt.close()
    return "float32"


def model_dtype_name(setting: str, template: str | Path) -> str:
    """``auto``: the template checkpoint's own dtype; else the dtype named (float32, bfloat16, float16)."""
    if setting.strip().lower() == "auto":
        return checkpoint_dtype_name(template)
    return parse_dtype_name(setting)
