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


def worker_sources(config: Any, space: Any | None = None) -> tuple[str | None, list[str]]:
    """(base, models) a search's workers hold, so that every candidate plans the residents' vocabulary rows.

    A recipe lays its vocabulary rows out over the models it merges, anchored on its base, or, for a
    method that ignores the base, on its first model (mergekit's rule; another union vocabulary). The
    workers then hold the fine-tunes alone, in that vocabulary. A space whose candidates do both would
    need two vocabularies in one model instance: refused here, naming the methods.
    """
    from evomerge.errors import ConfigError

    sources = config.sources
    base, models = sources.base, list(sources.models)
    if sources.tokenizer is None or base is None:
        return base, models
    if space is None:
        from evomerge.study.study import build_space

        space = build_space(config)
    if not hasattr(space, "uses_base"):  # not a parameter space: its recipes keep the base (or use data flow)
        return base, models
    with_base = {m.name: bool(space.uses_base(m)) for m in space.methods}
    if all(with_base.values()):
        return base, models
    if any(with_base.values()):
        raise ConfigError(
            "sources.tokenizer: the space's methods " + ", ".join(n for n, b in with_base.items() if b)
            + " merge against the base and " + ", ".join(n for n, b in with_base.items() if not b)
            + " merge the models alone: their candidates have different merged vocabularies (anchored on the "
            "base, or on the first model) and one worker's model holds one; search them in separate studies")
    return None, [m for m in models if m != base]
