"""Reading legacy ``pytorch_model*.bin`` (pickle) checkpoints, safely.

A pickle can run arbitrary code when loaded, and the point of a search is to
download checkpoints from strangers. So a ``.bin`` file is only ever read with
``torch.load(weights_only=True)``, whose unpickler accepts tensors and plain
containers and nothing else; anything else is refused with how to convert the
file to safetensors (after checking where it came from). ``mmap=True`` keeps
the tensors in the page cache instead of copying the whole file into RAM, so
"load once, hand out tensors by name" costs little more than safetensors does.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from evomerge.errors import CheckpointError


def convert_hint(path: Path) -> str:
    """How a user turns ``path`` into safetensors once they trust where it came from."""
    return (
        "convert it to safetensors once, if you trust its origin, e.g. "
        f'`python -c "import torch, safetensors.torch as st; '
        f"st.save_file({{k: v.contiguous() for k, v in torch.load('{path}', weights_only=False).items()}}, "
        f"'{path.with_name('model.safetensors')}')\"` (or `AutoModelForCausalLM.from_pretrained(src)"
        ".save_pretrained(dst)`), then point evomerge at the safetensors folder"
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one ``.bin`` file, memory-mapped; CheckpointError naming the file otherwise."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Files written with the pre-1.6 legacy format cannot be memory-mapped.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "GLOBAL" in reason:
            raise CheckpointError(
                f"{path}: refused to unpickle — the file holds more than tensors ({reason}); loading it "
                "fully could run arbitrary code. " + convert_hint(path)
            ) from exc
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({reason}); the file is corrupt, truncated or not "
            "a checkpoint — fetch it again, or " + convert_hint(path)
        ) from exc
    except Exception as exc:  # parsing arbitrary bytes: garbage raises IndexError, TypeError, struct.error...
        raise CheckpointError(
            f"{path}: cannot read this PyTorch checkpoint ({type(exc).__name__}: {exc}); the file is "
            "corrupt or truncated — fetch it again, or " + convert_hint(path)
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a dict of tensors; " + convert_hint(path)
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; " + convert_hint(path)
            )
        tensors[str(name)] = value
    return tensors


def _unpickler_reason(exc: Exception) -> str:
    """The one informative line of torch's long weights-only error message."""
    boilerplate = ("Weights only load failed", "Check the documentation", "(1)", "(2)")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(boilerplate)]
    reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(exc).__name__)
    return reason.removeprefix("WeightsUnpickler error:").strip().split(". Please use")[0]
