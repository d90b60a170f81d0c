"""Where each checkpoint tensor lands in a live model: ``from_pretrained``'s own key conversions, replayed.

transformers 5 converts checkpoint keys as it loads: renamed heads (GPT-NeoX's
``embed_out`` is the model's ``lm_head``), MoE experts stacked into one fused
parameter (Mixtral's ``experts.0.w1`` ... ``experts.7.w3`` become
``experts.gate_up_proj``), legacy ``gamma``/``beta`` names, and whatever the
next architecture needs. The in-place materializer merges tensors by their
checkpoint names, one source tensor (one expert) at a time exactly as the
streaming merge does, so it must then land them where ``from_pretrained``
would land the merged checkpoint.

Rather than keep a table of names, a :class:`LoadMap` asks transformers for
the model's conversion list (``get_model_conversion_mapping``, the call
``from_pretrained`` makes), routes every checkpoint key through the same
``rename_source_key``, groups the keys per target in the same (natural) order,
and per candidate runs the same converters' operations on the merged tensors.
An architecture works in place as soon as transformers can load it.

It is verified once, when built, on meta tensors (no data): every parameter
and persistent buffer of the model is written exactly once (tied parameters
once for all their names), no checkpoint tensor is dropped, and every
converted shape matches its parameter; anything else is an error naming the
tensors, before a single candidate is scored.
"""

from __future__ import annotations

import copy
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evomerge.errors import MergeError

Layout = Sequence[tuple[str, tuple[int, ...]]]


@dataclass
class _Group:
    """Checkpoint tensors that one transformers converter turns into one or more parameters."""

    layer_name: str  # transformers' name for the group: the first target key
    converter: Any  # a transformers WeightConverter, private to this group
    keys: dict[str, list[str]] = field(default_factory=dict)  # source pattern -> checkpoint keys, load order
    slots: dict[str, tuple[str, int]] = field(default_factory=dict)  # checkpoint key -> (pattern, position)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # converted name -> model tensor

    @property
    def size(self) -> int:
        return len(self.slots)


def _conversion_api() -> dict[str, Any] | None:
    """transformers' loading helpers, or None before transformers 5 (checkpoint keys were the model's keys)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            dot_natural_key,
            rename_source_key,
        )
    except ImportError:
        return None
    return {"mapping": get_model_conversion_mapping, "converter": WeightConverter, "renaming": WeightRenaming,
            "natural_key": dot_natural_key, "rename": rename_source_key}


class LoadMap:
    """The landing of one checkpoint layout (tensor names and shapes) in one model, verified once.

    ``write(name, merged)`` per merged tensor, in any order: a plainly renamed
    tensor is copied straight into its parameter; a converter's tensor waits
    until its group is complete, then the group is converted (stack, concat,
    transpose... as transformers does) and copied. ``finish()`` checks that no
    group was left half written.
    """

    def __init__(self, model: torch.nn.Module, layout: Layout) -> None:
        self._model = weakref.ref(model)
        self.layout = frozenset((name, tuple(shape)) for name, shape in layout)
        self._direct: dict[str, torch.Tensor] = {}
        self.renamed: dict[str, str] = {}  # checkpoint key -> parameter name, where they differ
        self._groups: list[_Group] = []
        self._member: dict[str, int] = {}  # checkpoint key -> group index
        self._pending: dict[int, dict[str, list[torch.Tensor | None]]] = {}
        shapes = {name: tuple(shape) for name, shape in layout}
        state = model.state_dict(keep_vars=True)
        unexpected = self._route(model, sorted(shapes, key=self._sort_key()), state)
        self._verify(model, shapes, state, unexpected)

    # ------------------------------------------------------------------ building
    @staticmethod
    def _sort_key():
        api = _conversion_api()
        return api["natural_key"] if api is not None else None

    def _route(self, model: torch.nn.Module, names: list[str], state: dict[str, torch.Tensor]) -> list[str]:
        """Assign every checkpoint key to a parameter or a converter group, as from_pretrained's first pass does."""
        api = _conversion_api()
        unexpected: list[str] = []
        if api is None or not hasattr(model, "base_model_prefix"):
            for name in names:
                if name in state:
                    self._direct[name] = state[name]
                else:
                    unexpected.append(name)
            return unexpected
        conversions = api["mapping"](model)
        renamings = [c for c in conversions if isinstance(c, api["renaming"])]
        converters = [c for c in conversions if isinstance(c, api["converter"])]
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        prefix = model.base_model_prefix
        groups: dict[str, int] = {}
        for name in names:
            renamed, pattern = api["rename"](name, renamings, converters, prefix, state)
            if renamed not in state and name in state:  # the key was already the model's
                renamed, pattern = api["rename"](name, [], [], base_model_prefix=prefix, meta_state_dict=state)
            if renamed not in state:
                unexpected.append(name)
                continue
            if pattern is None:
                self._direct[name] = state[renamed]
                if renamed != name:
                    self.renamed[name] = renamed
                continue
            index = groups.get(renamed)
            if index is None:
                index = groups[renamed] = len(self._groups)
                self._groups.append(_Group(layer_name=renamed, converter=copy.deepcopy(by_pattern[pattern])))
            group = self._groups[index]
            keys = group.keys.setdefault(pattern, [])
            group.slots[name] = (pattern, len(keys))
            keys.append(name)
            self._member[name] = index
        return unexpected

    def _verify(self, model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor],
                unexpected: list[str]) -> None:
        kind = type(model).__name__
        ignored_unexpected = _patterns(getattr(model, "_keys_to_ignore_on_load_unexpected", None))
        unexpected = [n for n in unexpected if not any(p.search(n) for p in ignored_unexpected)]
        if unexpected:
            raise MergeError(
                f"{kind} has no parameter for {len(unexpected)} checkpoint tensor(s), e.g. {unexpected[:3]}, even "
                "after transformers' key conversions; from_pretrained would drop them, so the scored model would "
                "not be the merged checkpoint — are the sources this model's architecture?")
        writes: dict[int, list[str]] = {}  # id of the model tensor -> checkpoint keys (or groups) writing it
        for name, target in self._direct.items():
            if tuple(target.shape) != shapes[name]:
                raise MergeError(f"checkpoint tensor '{name}' has shape {shapes[name]} but lands in a {kind} "
                                 f"parameter of shape {tuple(target.shape)}")
            writes.setdefault(id(target), []).append(name)
        for group in self._groups:
            meta = {pattern: [torch.empty(shapes[k], device="meta") for k in keys]
                    for pattern, keys in group.keys.items()}
            try:
                converted = self._convert(group, meta)
            except Exception as exc:
                raise MergeError(f"transformers' conversion of {sorted(group.slots)[:3]} into "
                                 f"'{group.layer_name}' failed: {exc}") from exc
            for out_name, tensor in converted.items():
                target = state.get(out_name)
                if target is None:
                    raise MergeError(f"transformers converts {sorted(group.slots)[:3]} into '{out_name}', which "
                                     f"{kind} does not have")
                if tuple(target.shape) != tuple(tensor.shape):
                    raise MergeError(f"transformers converts {len(group.slots)} checkpoint tensor(s) into "
                                     f"'{out_name}' of shape {tuple(tensor.shape)}, but {kind} holds "
                                     f"{tuple(target.shape)}; is the expert count in config.json right?")
                group.targets[out_name] = target
                writes.setdefault(id(target), []).append(f"{group.layer_name} (from {group.size} tensors)")
        aliases: dict[int, list[str]] = {}
        for name, tensor in state.items():
            aliases.setdefault(id(tensor), []).append(name)
        twice = {i: w for i, w in writes.items() if len(w) > 1}
        if twice:
            i, who = next(iter(twice.items()))
            raise MergeError(f"{kind} parameter {aliases[i]} would be written {len(who)} times, by {who}: "
                             "tied parameters must come from one checkpoint tensor (untie them in config.json, "
                             "tie_word_embeddings: false, or drop the duplicate tensor)")
        ignored_missing = _patterns(getattr(model, "_keys_to_ignore_on_load_missing", None))
        missing = [names for i, names in aliases.items()
                   if i not in writes and not any(p.search(n) for n in names for p in ignored_missing)]
        if missing:
            flat = [n for names in missing for n in names]
            raise MergeError(f"{len(flat)} {kind} parameter(s) would keep their initial values, no checkpoint "
                             f"tensor lands there: e.g. {flat[:3]}; the merge does not cover this model")

    def summary(self) -> str:
        """What transformers' conversions do to this layout, in a few words (for reports)."""
        parts = []
        if self.renamed:
            name, to = next(iter(self.renamed.items()))
            parts.append(f"{len(self.renamed)} renamed (e.g. {name} -> {to})")
        if self._groups:
            n = sum(g.size for g in self._groups)
            out = sorted({t for g in self._groups for t in g.targets})
            parts.append(f"{n} converted into {len(out)} (e.g. {out[0]})")
        return "; ".join(parts) or "names as stored"

    def checkpoint_names(self) -> list[str]:
        """Every checkpoint tensor name this map lands."""
        return [*self._direct, *self._member]

    def targets(self, name: str) -> dict[str, torch.Tensor]:
        """The model parameters (name -> tensor) that checkpoint tensor ``name`` is written into."""
        if name in self._direct:
            return {self.renamed.get(name, name): self._direct[name]}
        index = self._member.get(name)
        if index is None:
            raise MergeError(f"checkpoint tensor '{name}' is not part of the layout this model was mapped for")
        return dict(self._groups[index].targets)

    # ------------------------------------------------------------------ writing
    def _convert(self, group: _Group, collected: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """transformers' own WeightConverter.convert on ``collected`` (source pattern -> tensors in load order)."""
        model = self._model()
        converter = group.converter
        converter.collected_tensors = dict(collected)
        out = converter.convert(group.layer_name, model=model, config=getattr(model, "config", None))
        return {name: (value[0] if isinstance(value, list) else value) for name, value in out.items()}

    def begin(self) -> None:
        """Start a candidate: forget a previous candidate's half-filled groups (it raised mid-way)."""
        self._pending.clear()

    def write(self, name: str, merged: torch.Tensor) -> None:
        """Land one merged checkpoint tensor (float32) in the model."""
        target = self._direct.get(name)
        if target is not None:
            target.copy_(merged)
            return
        index = self._member.get(name)
        if index is None:
            raise MergeError(f"merged tensor '{name}' is not part of the checkpoint layout this model was mapped "
                             "for")
        group = self._groups[index]
        pending = self._pending.get(index)
        if pending is None:
            pending = self._pending[index] = {p: [None] * len(k) for p, k in group.keys.items()}
        pattern, position = group.slots[name]
        pending[pattern][position] = merged
        if all(t is not None for ts in pending.values() for t in ts):
            del self._pending[index]
            for out_name, tensor in self._convert(group, pending).items():  # type: ignore[arg-type]
                group.targets[out_name].copy_(tensor)

    def finish(self) -> None:
        """Refuse a candidate that left a converter group incomplete (some of its tensors never merged)."""
        if self._pending:
            index = next(iter(self._pending))
            self._pending.clear()
            raise MergeError(f"the merge wrote only part of the tensors transformers fuses into "
                             f"'{self._groups[index].layer_name}'")


def _patterns(values: Iterable[str] | None) -> list[re.Pattern[str]]:
    return [re.compile(v) for v in values or ()]


_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[frozenset, LoadMap]] = weakref.WeakKeyDictionary()


def load_map_for(model: torch.nn.Module, layout: Layout) -> LoadMap:
    """The model's (verified) LoadMap for this layout, built on first use and kept while the model lives."""
    key = frozenset((name, tuple(shape)) for name, shape in layout)
    maps = _CACHE.setdefault(model, {})
    found = maps.get(key)
    if found is None:
        found = maps[key] = LoadMap(model, layout)
    return found
