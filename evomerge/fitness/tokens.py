"""Tokenizer glue shared by the language-model tasks.

The tokenizer is the same for every candidate of a search, so tasks encode
their data once per tokenizer and keep it (:class:`EncodingCache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from evomerge.errors import FitnessError

T = TypeVar("T")


def encode(tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each text, no padding and no truncation."""
    if tokenizer is None:
        raise FitnessError("this task needs a tokenizer, got None")
    if not texts:
        return []
    out = tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False)
    return [list(ids) for ids in out["input_ids"]]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a generation: the tokenizer's EOS and the model's generation config's."""
    ids: list[int] = []
    for value in (getattr(tokenizer, "eos_token_id", None),
                  getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) not in ids:
                ids.append(int(v))
    return ids


def pad_id(tokenizer: Any) -> int:
    """The pad id, falling back to EOS then 0 (padded positions are masked, the value is inert)."""
    for name in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, int):
            return v
    return 0


class EncodingCache(Generic[T]):
    """Per split, the encoded data and the tokenizer it was made with (compared by identity)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, T]] = {}

    def get(self, split: str, tokenizer: Any, build: Callable[[], T]) -> T:
        entry = self._entries.get(split)
        if entry is not None and entry[0] is tokenizer:
            return entry[1]
        value = build()
        self._entries[split] = (tokenizer, value)
        return value
