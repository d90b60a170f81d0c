"""A search over sources with different vocabularies: every candidate recipe carries the tokenizer settings."""

from __future__ import annotations

from typing import Any

from evomerge.recipe.model import Recipe
from evomerge.recipe.tokenizer import TokenizerSpec


def carry_tokenizer(space: Any, spec: TokenizerSpec) -> None:
    """Make ``space.decode`` stamp ``spec`` on each parameter-space recipe it returns.

    The stamp is what makes a recorded or exported candidate reproduce the merge
    that was scored (the workers hold the sources in the merged vocabulary).
    Data-flow recipes keep model A's vocabulary and are returned as they are.
    """
    decode = space.decode

    def decode_with_tokenizer(genome: Any) -> Recipe:
        recipe = decode(genome)
        if recipe.layer_path or recipe.tokenizer is not None or recipe.tokenizer_source is not None:
            return recipe
        return recipe.model_copy(update={"tokenizer": spec})

    space.decode = decode_with_tokenizer
