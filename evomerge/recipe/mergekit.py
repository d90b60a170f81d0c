"""Export a Recipe as a mergekit YAML, or say exactly why mergekit cannot express it.

Import needs no code: a mergekit config is a valid Recipe (our schema is a
superset), so ``Recipe.load`` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from evomerge.errors import ConfigError
from evomerge.merge.registry import get_method
from evomerge.recipe.model import Recipe


class NotExpressibleError(ConfigError):
    """The recipe uses something mergekit has no way to say."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("mergekit cannot express this recipe:\n" + "\n".join(f"  - {r}" for r in reasons))


@dataclass
class MergekitExport:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.config, sort_keys=False, default_flow_style=None)


def mergekit_reasons(recipe: Recipe) -> list[str]:
    """Why mergekit can't express ``recipe`` (empty when it can)."""
    reasons = []
    for name in {recipe.merge_method, *(g.merge_method for g in recipe.groups)}:
        if get_method(name).mergekit_name is None:
            reasons.append(f"method '{name}' has no mergekit equivalent")
    if recipe.layer_path:
        reasons.append(
            "a data-flow 'layer_path' with per-hop input scales: mergekit's passthrough slices can stack layers "
            "but cannot scale a layer's input (export the folded checkpoint instead)"
        )
    if recipe.groups:
        reasons.append(
            f"{len(recipe.groups)} tensor group(s) with their own method/parameters ('groups'): mergekit applies "
            "one method to every tensor (per-tensor parameters can be written as filters, methods cannot)"
        )
    return reasons


def to_mergekit(recipe: Recipe) -> MergekitExport:
    """The mergekit config reproducing ``recipe``; raises NotExpressibleError listing every obstacle."""
    reasons = mergekit_reasons(recipe)
    if reasons:
        raise NotExpressibleError(reasons)
    method = get_method(recipe.merge_method)
    data = recipe.to_dict()
    for key in ("seed", "groups", "name", "layer_path"):
        data.pop(key, None)
    data["merge_method"] = method.mergekit_name
    warnings = []
    if method.randomized:
        warnings.append(
            f"'{method.name}' is randomised: evomerge seeds it (seed {recipe.seed}); mergekit draws from the global "
            "torch RNG, so its output matches ours in distribution but not bit for bit"
        )
    if _has_gradient(recipe):
        warnings.append(
            "a parameter gradient reaches the tensors after the layers (final norm, head): evomerge evaluates it "
            "there at t = 0 (its first value), as mergekit 0.1.5 does; mergekit before 0.1.5 took t = 1 (its last "
            "value). Add a {filter, value} condition for those tensors to make every mergekit version agree"
        )
    ordered = {k: data[k] for k in ("models", "slices", "base_model", "merge_method", "parameters", "dtype",
                                    "out_dtype", "tokenizer_source", "tokenizer", "chat_template") if k in data}
    ordered.update(recipe.ignored_keys)  # top-level keys mergekit ignores, written back where they were read
    return MergekitExport(config=ordered, warnings=warnings)


def _has_gradient(recipe: Recipe) -> bool:
    """True when some setting interpolates across depth with distinct ends, outside a filtered condition."""
    from evomerge.recipe.params import ConditionalParameter

    def varies(setting: object) -> bool:
        if isinstance(setting, list):
            if setting and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
                return float(setting[0]) != float(setting[-1])
            return any(isinstance(c, ConditionalParameter) and c.filter in (None, "*") and varies(c.value)
                       for c in setting)
        return False

    blocks = [recipe.parameters, *(m.parameters for m in recipe.models or [])]
    for sl in recipe.slices or []:
        blocks += [sl.parameters, *(src.parameters for src in sl.sources)]
    return any(varies(v) for block in blocks if block for v in block.values())
