"""The config of a model whose decoder layers were rearranged (passthrough slices, layer swap, data-flow fold).

Output layer j is a copy (or merge) of one source layer; the output's
``config.json`` must make transformers build layer j exactly as it built that
source layer, or the checkpoint loads wrongly (GPT-2 silently drops layers when
``n_layer`` is stale; Qwen2 refuses ``layer_types`` of the wrong length; a MoE
model builds a sparse block where the weights hold a dense MLP).

Nothing here lists fields by name; they are derived from the architecture:

* the layer count is ``num_hidden_layers`` through the config class's
  ``attribute_map`` (GPT-2 stores it as ``n_layer``);
* per-layer lists are the fields whose length follows the layer count, found
  by building the config class with two layer counts (``layer_types``; for a
  class transformers cannot build, the file's lists as long as the layer
  count); output layer j takes its source layer's entry;
* fields that decide per-layer structure in other ways (index lists such as
  ``mlp_only_layers``, thresholds such as ``first_k_dense_replace``,
  ``decoder_sparse_step``) are found by comparing each layer's *signature*:
  transformers builds the model on the meta device (no memory) from the
  source's config and from the output's, and a layer's module classes,
  parameter shapes and plain attributes (``attention_type``,
  ``sliding_window``, ...) must be equal to its source layer's. An index list
  is remapped to the output positions; a threshold is set to the value that
  makes every signature match. A mismatch left over is a MergeError naming
  the layer and the fields that were tried.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from evomerge.errors import MergeError

__all__ = ["LayerSource", "config_class", "layer_count_key", "quiet_transformers", "rearranged_config"]

# (the source model's config.json as a dict, the source layer's index)
LayerSource = tuple[Mapping[str, Any], int]


def config_class(config: Mapping[str, Any]) -> type | None:
    """The transformers config class of ``config``'s ``model_type`` (None when transformers does not know it)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[str(config.get("model_type"))]
    except KeyError:
        return None


def layer_count_key(config: Mapping[str, Any]) -> str | None:
    """The key of ``config`` that holds the layer count (``num_hidden_layers`` or the class's alias for it)."""
    cls = config_class(config)
    alias = getattr(cls, "attribute_map", {}).get("num_hidden_layers") if cls is not None else None
    for key in (alias, "num_hidden_layers"):
        if key and isinstance(config.get(key), int):
            return key
    return None


def _layer_section(config: Mapping[str, Any]) -> tuple[list[str], Mapping[str, Any]] | None:
    """Where the layer count lives: the top level, or a nested sub-config such as ``text_config``."""
    if layer_count_key(config) is not None:
        return [], config
    for key, value in config.items():
        if isinstance(value, dict) and layer_count_key(value) is not None:
            return [key], value
    return None


@functools.lru_cache(maxsize=64)
def _class_per_layer_fields(cls: type, count_key: str) -> frozenset[str]:
    """Fields of ``cls`` whose default is a list as long as the layer count (built with 3 and with 5 layers)."""
    try:
        three, five = cls(**{count_key: 3}).to_dict(), cls(**{count_key: 5}).to_dict()
    except Exception:  # a class that needs more arguments: fall back on the lists found in the file
        return frozenset()
    return frozenset(k for k, v in three.items()
                     if isinstance(v, list) and len(v) == 3 and isinstance(five.get(k), list) and len(five[k]) == 5)


def _filled(section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` as its config class fills it in (defaults such as ``layer_types`` computed from
    ``sliding_window``); the file itself when the class cannot read it."""
    return json.loads(_filled_json(_key(section)))


@functools.lru_cache(maxsize=256)
def _filled_json(section_json: str) -> str:
    section = json.loads(section_json)
    cls = config_class(section)
    if cls is not None:
        try:
            return json.dumps({**cls.from_dict(section).to_dict(), **section}, default=str)
        except Exception:
            pass
    return section_json


def _per_layer_fields(section: Mapping[str, Any], count_key: str) -> set[str]:
    """Per-layer lists: the config class's (probed); only for a class transformers cannot build, the file's
    lists as long as the layer count (a coincidental ``eos_token_id: [1, 2]`` of a 2-layer model must not be
    mistaken for one when the class knows better)."""
    cls = config_class(section)
    fields = set(_class_per_layer_fields(cls, count_key)) if cls is not None else set()
    if not fields and (cls is None or not _class_builds(cls, count_key)):
        n = section[count_key]
        fields = {k for k, v in section.items() if isinstance(v, list) and len(v) == n and n > 1
                  and k != "architectures" and not k.endswith(("token_id", "_ids"))}
    return {f for f in fields if f in section or f in _filled(section)}


@functools.lru_cache(maxsize=64)
def _class_builds(cls: type, count_key: str) -> bool:
    try:
        cls(**{count_key: 3})
    except Exception:
        return False
    return True


def rearranged_config(target: Mapping[str, Any], layers: Sequence[LayerSource]) -> dict[str, Any]:
    """``target`` (the config the output takes) rewritten for output layers ``layers`` (one source each).

    Raises MergeError when no rewrite makes transformers build every output
    layer as it built its source layer.
    """
    out = copy.deepcopy(dict(target))
    where = _layer_section(out)
    if where is None:  # nothing says how many layers there are: the strict load decides
        return out
    path, section = where
    sources = [(_section_of(src, path), layer) for src, layer in layers]
    count_key = layer_count_key(section)
    assert count_key is not None
    new = dict(section)
    new[count_key] = len(layers)
    for field in _per_layer_fields(section, count_key):
        values = []
        for src, layer in sources:
            src_values = _filled(src).get(field)
            if not isinstance(src_values, list) or layer >= len(src_values):
                raise MergeError(f"config field '{field}': source config has no entry for layer {layer} "
                                 f"({src_values!r})")
            values.append(src_values[layer])
        new[field] = values
    new = _match_structure(new, sources, count_key)
    if path:
        out[path[0]] = new
    else:
        out = new
    return out


def _section_of(config: Mapping[str, Any], path: list[str]) -> Mapping[str, Any]:
    return config[path[0]] if path and isinstance(config.get(path[0]), dict) else config


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """The probe builds, saves and loads tiny models: none of transformers' reports or progress bars."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers")
    level, bars = logger.level, hf_logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------ signatures
def _key(section: Mapping[str, Any]) -> str:
    return json.dumps(section, sort_keys=True, default=str)


@functools.lru_cache(maxsize=128)
def _signatures(section_json: str) -> tuple[tuple, ...] | None:
    """Per decoder layer: what transformers builds for it from this config (None when it cannot build it)."""
    import torch
    from transformers import AutoModelForCausalLM

    section = json.loads(section_json)
    cls = config_class(section)
    if cls is None:
        return None
    try:
        with quiet_transformers(), torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cls.from_dict(section))
    except Exception:
        return None
    stack = decoder_layers(model, section[layer_count_key(section) or "num_hidden_layers"])
    if stack is None:
        return None
    raw = [_raw_signature(layer) for layer in stack]
    # attributes equal to the layer's own position (layer_idx, ...) are not structure
    positional = {k for k in raw[0][1] if all(r[1].get(k) == i for i, r in enumerate(raw))} if len(raw) > 1 \
        else {k for k, v in raw[0][1].items() if v == 0 and ("idx" in k[1] or "layer" in k[1])}
    return tuple((r[0], tuple(sorted((k, v) for k, v in r[1].items() if k not in positional))) for r in raw)


def _raw_signature(layer: Any) -> tuple[tuple, dict[tuple[str, str], Any]]:
    modules = tuple((name, type(mod).__name__) for name, mod in layer.named_modules())
    params = tuple((name, tuple(p.shape)) for name, p in layer.named_parameters())
    attrs: dict[tuple[str, str], Any] = {}
    for name, mod in layer.named_modules():
        for k, v in vars(mod).items():
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, type(None))):
                attrs[(name, k)] = v
    return (modules, params), attrs


def decoder_layers(model: Any, count: int) -> Any | None:
    """The model's stack of decoder layers: the outermost ModuleList as long as the layer count."""
    from torch import nn

    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    return None


def _mismatches(section: Mapping[str, Any], sources: Sequence[tuple[Mapping[str, Any], int]]) -> list[int] | None:
    """Output layers built unlike their source layer (None when a signature cannot be computed)."""
    out = _signatures(_key(section))
    if out is None:
        return None
    bad = []
    for j, (src, layer) in enumerate(sources):
        sig = _signatures(_key(src))
        if sig is None:
            return None
        if out[j] != sig[layer]:
            bad.append(j)
    return bad


def _match_structure(section: dict[str, Any], sources: Sequence[tuple[Mapping[str, Any], int]],
                     count_key: str) -> dict[str, Any]:
    """Remap index lists and thresholds until every output layer's signature equals its source layer's.

    Candidates are the plain-int fields no larger than the layer count (thresholds, steps) and the lists of
    such ints (layer index lists); a change is kept when it leaves fewer mismatched layers. Order: index
    lists remapped to the output positions (output layer j is listed iff its source layer was), the best
    value of each threshold, then one by one the still mismatched positions toggled in each index list.
    """
    bad = _mismatches(section, sources)
    if not bad:  # all match, or transformers cannot build this architecture (the strict load decides)
        return section
    n_out = len(sources)
    src_counts = [s.get(layer_count_key(s) or "", None) for s, _ in sources]
    top = max([n_out, *(c for c in src_counts if isinstance(c, int))])
    lists, thresholds = [], []
    for field, value in section.items():
        if field == count_key or isinstance(value, bool):
            continue
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < top
                                           for v in value):
            lists.append(field)
        elif isinstance(value, int) and 0 <= value <= top:
            thresholds.append(field)

    def toggled(sec: dict[str, Any], now: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Toggle still mismatched positions in each index list, keeping each toggle that helps."""
        for f in lists:
            for j in list(now):
                if not now:
                    break
                candidate = {**sec, f: sorted(set(sec[f]) ^ {j})}
                after = _mismatches(candidate, sources)
                if after is not None and len(after) < len(now):
                    sec, now = candidate, after
        return sec, now

    remapped = {**section, **{f: [j for j, (src, layer) in enumerate(sources) if layer in (src.get(f) or [])]
                              for f in lists}}
    after = _mismatches(remapped, sources)
    if after is not None and len(after) <= len(bad):
        section, bad = remapped, after
    section, bad = toggled(section, bad)
    def structural(f: str) -> bool:
        """Whether ``f`` changes what transformers builds for some layer (most small ints do not)."""
        here = _signatures(_key(section))
        return any(_signatures(_key({**section, f: v})) not in (None, here)
                   for v in {section[f] + 1, max(section[f] - 1, 0)} - {section[f]})

    thresholds = [f for f in thresholds if structural(f)]
    for f in thresholds:
        for v in range(0, n_out + 2):
            if not bad:
                return section
            if v == section[f]:
                continue
            now = _mismatches({**section, f: v}, sources)
            if now is None:
                continue
            candidate, now = toggled({**section, f: v}, now)
            if len(now) < len(bad):
                section, bad = candidate, now
    if not bad:
        return section
    j = bad[0]
    src, layer = sources[j]
    out_sig, src_sig = _signatures(_key(section)), _signatures(_key(src))
    assert out_sig is not None and src_sig is not None
    diff = _first_difference(out_sig[j], src_sig[layer])
    raise MergeError(f"config: output layer {j} (source layer {layer}) would be built by transformers as "
                     f"{diff[0]} but its weights are a {diff[1]}; no setting of the per-layer config fields "
                     f"({', '.join(lists + thresholds) or 'none found'}) describes this layer order")


def _first_difference(a: tuple, b: tuple) -> tuple[str, str]:
    (mods_a, params_a), attrs_a = a
    (mods_b, params_b), attrs_b = b
    for x, y in zip(mods_a, mods_b, strict=False):
        if x != y:
            return f"{x[0]}={x[1]}", f"{y[0]}={y[1]}"
    if params_a != params_b:
        return f"parameters {[p for p in params_a if p not in params_b][:3]}", \
               f"layer with {[p for p in params_b if p not in params_a][:3]}"
    da, db = dict(attrs_a), dict(attrs_b)
    for k in sorted(set(da) | set(db)):
        if da.get(k) != db.get(k):
            return f"{'.'.join(filter(None, k))}={da.get(k)!r}", f"layer with {'.'.join(filter(None, k))}={db.get(k)!r}"
    return "a different layer", "layer"
