"""The Recipe: one merge as pure data.

Its schema is a superset of mergekit's merge YAML (``models`` / ``slices`` /
``base_model`` / ``merge_method`` / ``parameters`` / ``dtype`` /
``tokenizer_source`` / ``tokenizer`` / ``chat_template``) so that any mergekit config for a method we share
loads unchanged, plus evomerge's extensions: an explicit ``seed`` for the
randomised methods and ``groups`` that give some tensors their own method.
Parameter *values* are checked against each method's schema when the merge is
planned, per tensor, before any weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.errors import MergeError
from evomerge.recipe.ignored import ignored_at_top_level, mergekit_parameter_names, warn_ignored
from evomerge.recipe.params import ParameterSetting
from evomerge.recipe.tokenizer import TokenizerSpec, tokenizer_settings
from evomerge.yamlfile import read_yaml, validate_mapping

# mergekit keys we recognise but do not implement: refuse them by name instead of
# merging something else than the user asked for.
_UNSUPPORTED_MERGEKIT_KEYS = {
    "modules": "multi-module merges",
}
DTYPES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
Parameters = dict[str, ParameterSetting]


def _known_method(name: str) -> str:
    from evomerge.merge.registry import get_method

    try:
        get_method(name)
    except MergeError as exc:
        raise ValueError(str(exc)) from None
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """One source model (a folder path) with its per-model parameters."""

    model: str
    parameters: Parameters | None = None

    @field_validator("model")
    @classmethod
    def _no_lora_suffix(cls, v: str) -> str:
        if "+" in v and not Path(v).exists():
            raise ValueError(f"'{v}': mergekit's model+lora syntax is not supported; merge the LoRA first")
        return v


class SliceSource(_Strict):
    """A contiguous range of layers [start, end) of one model."""

    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None
    # accepted as mergekit accepts it, and ignored as mergekit ignores it (a warning says so): a revision is
    # read only from ``model: name@revision`` there; here a model is a local folder
    revision: str | None = None

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"layer_range {list(v)} must satisfy 0 <= start < end")
        return v


class Slice(_Strict):
    """Output layers made by merging equally long layer ranges of several models."""

    sources: list[SliceSource] = Field(min_length=1)
    base_model: str | None = None
    parameters: Parameters | None = None

    @model_validator(mode="after")
    def _equal_lengths(self) -> Slice:
        lengths = {s.layer_range[1] - s.layer_range[0] for s in self.sources}
        if len(lengths) > 1:
            raise ValueError(f"all sources of a slice must span the same number of layers, got {sorted(lengths)}")
        return self

    @property
    def num_layers(self) -> int:
        r = self.sources[0].layer_range
        return r[1] - r[0]


class GroupOverride(_Strict):
    """evomerge extension: tensors matching this group use their own method and parameters.

    A tensor belongs to the group when its name contains ``filter`` (if given)
    and its layer index lies in ``layers = [start, end)`` (if given; tensors
    outside the layers never match a ``layers`` group). The first matching
    group wins. ``model_parameters`` maps a model path to its parameters.
    """

    filter: str | None = None
    layers: tuple[int, int] | None = None
    merge_method: str
    parameters: Parameters | None = None
    model_parameters: dict[str, Parameters] | None = None

    @field_validator("merge_method")
    @classmethod
    def _method_known(cls, v: str) -> str:
        return _known_method(v)

    def matches(self, name: str, layer: int | None) -> bool:
        if self.filter not in (None, "*") and self.filter not in name:
            return False
        if self.layers is not None:
            return layer is not None and self.layers[0] <= layer < self.layers[1]
        return True


class Hop(_Strict):
    """One step of a data-flow merge: run ``layer`` of ``model`` on the stream scaled by ``scale``."""

    model: str
    layer: int = Field(ge=0)
    scale: float = Field(default=1.0, gt=0)


class Recipe(_Strict):
    """A merge: which models, which method with which parameters, output dtype and seed."""

    models: list[ModelSpec] | None = None
    slices: list[Slice] | None = None
    merge_method: str
    base_model: str | None = None
    parameters: Parameters | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerSpec | None = None
    chat_template: str | None = None
    # evomerge extensions (exported to mergekit only where it can express them)
    seed: int = 0
    groups: list[GroupOverride] = Field(default_factory=list)
    # data-flow merge (Akiba et al. 2403.13187): when set, the layer stack is these hops, in order,
    # and everything outside the layers (embeddings, final norm, head, tokenizer) comes from
    # ``base_model`` (the paper's model A), itself possibly the output of a parameter-space merge.
    layer_path: list[Hop] | None = None
    name: str | None = None
    # Top-level keys mergekit ignores (``select_topk``, ``int8_mask``, ``pad_to_multiple_of``: see
    # evomerge.recipe.ignored), set aside when read and written back at the top level by ``to_dict``.
    ignored_keys: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, what in _UNSUPPORTED_MERGEKIT_KEYS.items():
                if data.get(key) is not None:
                    raise ValueError(f"'{key}' ({what}) is a mergekit feature evomerge does not support")
            aside = {k: v for k, v in data.items() if k not in cls.model_fields and ignored_at_top_level(k)}
            if aside:
                data = {k: v for k, v in data.items() if k not in aside}
                data["ignored_keys"] = {**(data.get("ignored_keys") or {}), **aside}
        return data

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if (self.models is None) == (self.slices is None):
            raise ValueError("give exactly one of 'models' or 'slices'")
        if self.models is not None and not self.models:
            raise ValueError("'models' is empty: list at least one model to merge")
        for key in ("dtype", "out_dtype"):
            value = getattr(self, key)
            if value is not None and value.removeprefix("torch.") not in DTYPES:  # mergekit reads torch.bfloat16
                raise ValueError(f"'{key}' must be one of {', '.join(DTYPES)}, got '{value}'")
        if self.layer_path is not None and (not self.layer_path or not self.base_model):
            raise ValueError("a layer_path needs at least one hop and a base_model (model A: embeddings and head)")
        if self.layer_path is not None and (self.tokenizer is not None or self.tokenizer_source == "union"):
            raise ValueError("a data-flow recipe (layer_path) keeps model A's vocabulary: a merged tokenizer "
                             "('tokenizer' block, tokenizer_source: union) cannot apply")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give 'tokenizer_source' or a 'tokenizer' block, not both (mergekit refuses both)")
        self._warn_ignored_keys()
        return self

    def _warn_ignored_keys(self) -> None:
        """One warning per key mergekit ignores (evomerge.recipe.ignored); unknown keys are the planner's errors."""
        from evomerge.merge.registry import get_method

        found: dict[str, list[str]] = {key: ["top level"] for key in self.ignored_keys}
        declared = {p.name for m in [self.merge_method, *(g.merge_method for g in self.groups)]
                    for p in get_method(m).params}
        names = mergekit_parameter_names()
        blocks: list[tuple[str, Parameters | None]] = [("parameters", self.parameters)]
        blocks += [(f"models[{i}].parameters", m.parameters) for i, m in enumerate(self.models or [])]
        for i, sl in enumerate(self.slices or []):
            blocks.append((f"slices[{i}].parameters", sl.parameters))
            for j, src in enumerate(sl.sources):
                blocks.append((f"slices[{i}].sources[{j}].parameters", src.parameters))
                if src.revision is not None:
                    found.setdefault("revision", []).append(f"slices[{i}].sources[{j}]")
        for where, params in blocks:
            for key in params or {}:
                if key not in declared and key in names:
                    found.setdefault(key, []).append(where)
        warn_ignored(found, self.merge_method)

    @field_validator("ignored_keys")
    @classmethod
    def _only_keys_mergekit_ignores(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in cls.model_fields or not ignored_at_top_level(key):
                raise ValueError(f"'{key}' is not a top-level key mergekit ignores (see evomerge.recipe.ignored)")
        return v

    @property
    def tokenizer_settings(self) -> TokenizerSpec | None:
        """The tokenizer to build (None: copy the config model's tokenizer files as they are)."""
        return tokenizer_settings(self.tokenizer_source, self.tokenizer)

    @field_validator("merge_method")
    @classmethod
    def _method_known(cls, v: str) -> str:
        return _known_method(v)

    @field_validator("chat_template")
    @classmethod
    def _template_readable(cls, v: str | None) -> str | None:
        from evomerge.vocab.chat_template import check_chat_template

        if v is not None:
            check_chat_template(v)
        return v

    # ---- what the recipe refers to -------------------------------------------------
    def referenced_models(self) -> list[str]:
        """Every model path, base first when there is one, in first-mention order."""
        seen: dict[str, None] = {}
        if self.base_model:
            seen[self.base_model] = None
        for spec in self.models or []:
            seen[spec.model] = None
        for sl in self.slices or []:
            for src in sl.sources:
                seen[src.model] = None
            if sl.base_model:
                seen[sl.base_model] = None
        for hop in self.layer_path or []:
            seen[hop.model] = None
        return list(seen)

    def group_for(self, name: str, layer: int | None) -> GroupOverride | None:
        return next((g for g in self.groups if g.matches(name, layer)), None)

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude_none=True, exclude_defaults=False), **self.ignored_keys}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<recipe>") -> Recipe:
        return validate_mapping(cls, data, source=source, what="recipe")

    @classmethod
    def from_json(cls, text: str, *, source: str = "<recipe>") -> Recipe:
        return cls.from_dict(json.loads(text), source=source)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe from YAML or JSON (mergekit configs included); errors name the file and key."""
        data = read_yaml(path, "recipe file")
        return cls.from_dict(data, source=str(path))

