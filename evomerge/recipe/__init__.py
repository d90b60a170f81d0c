"""Recipes: the pure-data description of one merge, JSON/YAML round-trippable."""

from evomerge.recipe.model import GroupOverride, Hop, ModelSpec, Recipe, Slice, SliceSource
from evomerge.recipe.params import ConditionalParameter, evaluate_setting

__all__ = [
    "ConditionalParameter",
    "GroupOverride",
    "Hop",
    "ModelSpec",
    "Recipe",
    "Slice",
    "SliceSource",
    "evaluate_setting",
]
