"""Right answer, right language: the evolutionary-merge paper's fitness (arXiv 2403.13187, Japanese math).

An answer counts only if the extracted answer matches the reference *and* the
generation is written in the target language. The language detector is ``langid``
(pip install langid): its model ships inside the package, nothing is downloaded.

    kind: python
    function: evomerge.fitness.scorers.language:answer_in_language
    args: {language: fr, extract: last_number}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evomerge.fitness.extract import make_extractor, normalize

_LETTERS = re.compile(r"[^\W\d_]+")


@functools.cache
def _identifier(candidates: tuple[str, ...] | None) -> Any:
    """One langid model per worker (loading it takes about a second)."""
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError:
        raise ImportError("the language scorer needs langid: pip install langid") from None
    ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    if candidates:
        ident.set_languages(list(candidates))
    return ident


def detect_language(text: str, candidates: Sequence[str] | None = None) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when it has no letters (digits alone have none)."""
    words = " ".join(_LETTERS.findall(text))
    if not words:
        return None
    return _identifier(tuple(candidates) if candidates else None).classify(words)[0]


def answer_in_language(generations: Sequence[str], examples: Sequence[Mapping[str, Any]], *,
                       language: str | None = None, extract: str = "exact", pattern: str | None = None,
                       candidates: Sequence[str] | None = None) -> list[float]:
    """1.0 where the extracted answer equals ``answer`` and the generation is in ``language``
    (or the example's own ``language`` key), else 0.0. ``candidates`` restricts langid's choice."""
    get = make_extractor(extract, pattern)
    scores = []
    for text, ex in zip(generations, examples, strict=True):
        want = ex.get("language", language)
        if want is None:
            raise ValueError("no target language: give args.language or a 'language' key per example")
        right = get(text) == normalize(str(ex["answer"]))
        scores.append(float(right and detect_language(text, candidates) == want))
    return scores
