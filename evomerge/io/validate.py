"""Checks run on opened checkpoints before merging: compatible sources, finite tensors.

Both fail fast with the first problem named (tensor, files, shapes), because a
mismatch found hours into a search, or a NaN that silently poisons every merge
it takes part in, costs far more than a check at open time.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from evomerge.io.checkpoint import Checkpoint

__all__ = ["check_compatible", "check_finite", "check_vocabulary"]

_VOCAB_TENSOR_RE = re.compile(
    r"(?:^|\.)(embed_tokens|wte|word_embeddings|embed_in|lm_head|embed_out|output)\.weight$")


def _arch(config: dict) -> tuple[str | None, tuple[str, ...] | None]:
    archs = config.get("architectures")
    return config.get("model_type"), tuple(archs) if isinstance(archs, list) else None


def _vocab_error(a: Checkpoint, b: Checkpoint, va: int, vb: int, where: str) -> CheckpointError:
    return CheckpointError(
        f"vocabulary sizes differ ({where}): {getattr(a, 'path', a)} has {va} tokens, {getattr(b, 'path', b)} "
        f"has {vb}. "
        "Their tokenizers and embedding matrices differ, so merging them row by row would mix "
        "unrelated tokens. Pick sources that share a tokenizer, or merge across tokenizers as mergekit does: "
        "set `tokenizer_source: union` (or `base`, or a model) in the recipe."
    )


def check_compatible(checkpoints: Sequence[Checkpoint], *, names: Iterable[str] | None = None,
                     vocab_may_differ: bool = False) -> None:
    """Refuse sources that cannot be merged tensor by tensor, naming the first mismatch and both folders.

    Checks, in this order: architecture and model_type in config.json, vocabulary size (config, then the
    embedding/head rows), then every tensor of ``names`` (default: all of the first source, and no extra
    ones in the others) is present everywhere with the same shape. Dtypes may differ: merges upcast.
    ``vocab_may_differ``: the recipe builds a merged vocabulary, so embedding/head rows may differ in number.
    """
    if len(checkpoints) < 2:
        return
    first = checkpoints[0]
    wanted = list(names) if names is not None else first.names
    for other in checkpoints[1:]:
        (ta, aa), (tb, ab) = _arch(first.config), _arch(other.config)
        if (ta and tb and ta != tb) or (aa and ab and aa != ab):
            raise CheckpointError(
                f"architectures differ: {first.path} is {list(aa or ())} (model_type {ta!r}), "
                f"{other.path} is {list(ab or ())} (model_type {tb!r}); "
                "only models of the same architecture can be merged"
            )
        va, vb = first.config.get("vocab_size"), other.config.get("vocab_size")
        if isinstance(va, int) and isinstance(vb, int) and va != vb and not vocab_may_differ:
            raise _vocab_error(first, other, va, vb, "config.json vocab_size")
    for name in wanted:
        if name not in first:
            raise CheckpointError(
                f"tensor {name!r} is missing from {first.path} (present in the merge's tensor list)"
            )
        shape = first.info(name).shape
        for other in checkpoints[1:]:
            if name not in other:
                raise CheckpointError(
                    f"tensor {name!r} is missing from {other.path} but present in {first.path}; "
                    "the sources do not share an architecture or one checkpoint is incomplete"
                )
            other_shape = other.info(name).shape
            if other_shape != shape:
                if vocab_may_differ and _VOCAB_TENSOR_RE.search(name) and shape[1:] == other_shape[1:]:
                    continue
                if _VOCAB_TENSOR_RE.search(name) and shape[1:] == other_shape[1:] and shape and other_shape:
                    raise _vocab_error(first, other, shape[0], other_shape[0], f"rows of {name!r}")
                raise CheckpointError(
                    f"tensor {name!r} has shape {shape} in {first.path} but {other_shape} in {other.path}; "
                    "the sources have different sizes and cannot be merged"
                )
    if names is None:
        for other in checkpoints[1:]:
            extra = [n for n in other.names if n not in first]
            if extra:
                raise CheckpointError(
                    f"tensor {extra[0]!r} is missing from {first.path} but present in {other.path} "
                    f"({len(extra)} such tensors); the sources do not share an architecture"
                )


def _config_vocab(config: object) -> int | None:
    if not isinstance(config, dict):
        return None
    for cfg in (config, config.get("text_config")):
        if isinstance(cfg, dict) and isinstance(cfg.get("vocab_size"), int):
            return cfg["vocab_size"]
    return None


_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # checkpoint -> its vocab rows (a search re-plans)


def _vocab_rows(ckpt: Checkpoint) -> dict[str, int]:
    """Rows of the embedding / head tensors, by name (the vocabulary as the weights see it)."""
    with contextlib.suppress(KeyError, TypeError):  # TypeError: not weak-referenceable, computed each time
        return _ROWS[ckpt]
    rows = {n: ckpt.info(n).shape[0] for n in ckpt.names if _VOCAB_TENSOR_RE.search(n) and ckpt.info(n).shape}
    with contextlib.suppress(TypeError):
        _ROWS[ckpt] = rows
    return rows


def check_vocabulary(checkpoints: Sequence[Checkpoint]) -> None:
    """Refuse a merge whose tensors come from models of different vocabulary sizes, from headers alone.

    Every path needs it, passthrough slices included: a slice recipe takes the
    embedding from its first slice's model and the head from its last one's, so
    two vocabularies would give an embedding and a head of different sizes.
    Compares config.json's ``vocab_size`` (or ``text_config.vocab_size``), then
    the rows of the embedding and head tensors.
    """
    if len(checkpoints) < 2:
        return
    first = checkpoints[0]
    va, rows_a = _config_vocab(getattr(first, "config", None)), _vocab_rows(first)
    for other in checkpoints[1:]:
        vb = _config_vocab(getattr(other, "config", None))
        if va is not None and vb is not None and va != vb:
            raise _vocab_error(first, other, va, vb, "config.json vocab_size")
        rows_b = _vocab_rows(other)
        for name, n in rows_a.items():
            if name in rows_b and rows_b[name] != n:
                raise _vocab_error(first, other, n, rows_b[name], f"rows of {name!r}")
        if rows_a and rows_b and set(rows_a.values()) != set(rows_b.values()):
            na, nb = max(rows_a.values()), max(rows_b.values())
            raise _vocab_error(first, other, na, nb, "rows of the embedding / head tensors")


def check_finite(tensor: torch.Tensor, *, name: str, path: Path) -> None:
    """Refuse a tensor holding NaN or inf: one would silently poison every merge it takes part in."""
    import torch  # the header checks above need none; this one has a tensor, so torch is loaded already

    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    if bool(torch.isfinite(tensor).all()):
        return
    nan = int(torch.isnan(tensor).sum())
    posinf = int(torch.isposinf(tensor).sum()) if tensor.is_floating_point() else 0
    neginf = int(torch.isneginf(tensor).sum()) if tensor.is_floating_point() else 0
    raise CheckpointError(
        f"{path}: tensor {name!r} has {nan} NaN, {posinf} +inf and {neginf} -inf values out of "
        f"{math.prod(tensor.shape)}; the checkpoint is broken (diverged training or a bad conversion) — "
        "drop this source or fetch a good copy"
    )
