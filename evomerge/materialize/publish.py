"""Writing a planned checkpoint and publishing it only once it is complete and loads as what it claims to be.

One skeleton for every materializer that writes a model folder (the streaming
merge, the data-flow fold): the tensors of a fixed layout streamed into
shards, the side files (config, tokenizer, recipe), and, when the output's
layers are not the config model's own (layer surgery), a strict load with
plain transformers before the temporary folder is renamed into place. A
checkpoint that transformers would load wrongly is a MergeError naming the
config field, never a published folder.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import MergeError
from evomerge.io.writer import ShardedWriter, atomic_output_dir
from evomerge.materialize.layer_config import LayerSource, layer_count_key, quiet_transformers, rearranged_config

__all__ = ["rewrite_layer_config", "verify_strict_load", "write_checkpoint"]

Layout = Sequence[tuple[str, tuple[int, ...], torch.dtype]]


def write_checkpoint(
    out_dir: Path,
    layout: Layout,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    side_files: Callable[[Path], None],
    verify: bool,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 2**30,
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Stream ``tensors`` (in any order, each once) into ``out_dir``; returns the weight files written.

    ``side_files(tmp)`` writes config, tokenizer and provenance into the
    temporary folder; with ``verify`` the finished folder must then load
    strictly with transformers (`verify_strict_load`) before it is published.
    """
    stream = iter(tensors)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, contextlib.ExitStack() as stack:
        stack.callback(getattr(stream, "close", lambda: None))  # a generator's own cleanup (reader threads)
        with ShardedWriter(tmp, layout, max_shard_bytes=max_shard_bytes) as writer:
            for i, (name, tensor) in enumerate(stream):
                writer.write(name, tensor)
                if on_tensor is not None:
                    on_tensor(i + 1, len(layout), name)
            files = writer.close()
        side_files(tmp)
        if verify:
            verify_strict_load(tmp, shown_as=out_dir)
    return [out_dir / f.name for f in files]


def rewrite_layer_config(folder: Path, layers: Sequence[LayerSource]) -> None:
    """Rewrite ``folder/config.json`` (the config model's) for output layers taken from ``layers``."""
    path = folder / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(rearranged_config(config, layers), indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")


_LAYER_IN_KEY = re.compile(r"\.(\d+)\.")


def verify_strict_load(folder: Path, *, shown_as: Path | None = None) -> None:
    """Load ``folder`` with ``AutoModelForCausalLM``; any missing, unexpected or misshapen tensor is a MergeError.

    transformers only warns about unexpected keys (GPT-2 with a stale
    ``n_layer`` drops the extra layers and loads), so the loading report is
    checked here; when the surplus or missing tensors are whole layers, the
    error names the config field that holds the layer count.
    """
    from transformers import AutoModelForCausalLM

    where = shown_as or folder
    try:
        with quiet_transformers():
            model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    except Exception as exc:
        raise MergeError(f"{where}: transformers cannot load the written model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); it is not published") from exc
    del model
    problems = {kind: sorted(info.get(kind) or ()) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if not any(problems.values()):
        return
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hint = _count_hint(config, problems)
    detail = "; ".join(f"{len(v)} {k.replace('_', ' ')}, e.g. {[_short(x) for x in v[:3]]}"
                       for k, v in problems.items() if v)
    raise MergeError(f"{where}: transformers would load this model wrongly ({detail}){hint}; it is not published")


def _short(item: Any) -> str:
    return item if isinstance(item, str) else str(item[0] if isinstance(item, tuple) else item)


def _count_hint(config: Mapping[str, Any], problems: Mapping[str, list]) -> str:
    section = config
    key = layer_count_key(config)
    if key is None:
        for value in config.values():
            if isinstance(value, dict) and layer_count_key(value):
                section, key = value, layer_count_key(value)
                break
    if key is None:
        return ""
    n = section[key]
    layers = {int(m.group(1)) for v in problems.values() for x in v if (m := _LAYER_IN_KEY.search(_short(x)))}
    if any(i >= n for i in layers):
        return f" (config field '{key}' says {n} layers but the weights hold layer {max(layers)})"
    if problems["missing_keys"] and layers:
        return f" (config field '{key}' says {n} layers; layers {sorted(layers)[:5]} lack tensors)"
    return ""
