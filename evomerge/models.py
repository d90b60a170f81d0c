"""Loading a model folder as the object fitness tasks score: a causal LM or a zoo MLP.

Dispatches on config.json's ``model_type``: evomerge's own small networks
(the digits MLP) load through their class; everything else through
transformers' Auto classes, so a 7B checkpoint and a tiny zoo model take the
same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evomerge.io.json_object import read_json_object


def checkpoint_dtype(path: str | Path) -> torch.dtype:
    """The floating dtype a checkpoint's weights are stored in, from its header (mergekit's output rule;
    `evomerge.model_dtype.checkpoint_dtype_name` without torch)."""
    from evomerge.model_dtype import checkpoint_dtype_name

    return getattr(torch, checkpoint_dtype_name(path))


def resolve_model_dtype(setting: str | torch.dtype, template: str | Path) -> torch.dtype:
    """``runner.model_dtype``: ``auto`` is the template checkpoint's own dtype (what an export is written in).

    The model instance a worker scores is kept in this dtype: a bf16 search then
    scores exactly the bf16 checkpoint it exports, and holds half the memory of
    a float32 instance. Merge arithmetic stays float32 per tensor either way.
    """
    from evomerge.model_dtype import model_dtype_name

    return getattr(torch, model_dtype_name(str(setting), template))


def model_type(path: str | Path) -> str | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return read_json_object(config).get("model_type")


def load_model(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               device_map: dict[str, str] | None = None) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, tokenizer or None) for the folder at ``path``.

    ``device_map``: module name -> device, a model split over several devices (transformers places the
    modules and accelerate's hooks move the activations between them); ``device`` is then unused.
    """
    from evomerge.zoo.digits import MODEL_TYPE as DIGITS_MODEL_TYPE

    path = Path(path)
    if model_type(path) == DIGITS_MODEL_TYPE:
        if device_map is not None:
            from evomerge.errors import ConfigError

            raise ConfigError(f"model {path}: a split over several devices needs a transformers model")
        from evomerge.zoo.digits import DigitsMLP

        model = DigitsMLP.from_pretrained(path)
        return model.to(device=device, dtype=dtype).eval(), None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device_map is not None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    tokenizer = None
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
