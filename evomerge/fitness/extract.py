"""Answer extraction for generation tasks: turn a model's continuation into the string compared.

Exact match is only as good as the extraction: a model that answers "12." or
"12 apples" should score like one that answers "12" when the task says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize(text: str) -> str:
    """Collapse runs of whitespace and strip, so spacing never decides a match."""
    return " ".join(text.split())


def make_extractor(kind: str, pattern: str | None = None) -> Callable[[str], str]:
    """Return the extraction function for one ``extract`` config.

    - ``exact``: the whole continuation;
    - ``first_line``: up to the first newline;
    - ``last_number``: the last integer or decimal number ("" if none);
    - ``regex``: the first match of ``pattern`` (its group 1 if it has groups, "" if none).
    """
    if kind == "exact":
        return normalize
    if kind == "first_line":
        return lambda text: normalize(text.strip().split("\n", 1)[0]) if text.strip() else ""
    if kind == "last_number":

        def last_number(text: str) -> str:
            found = _NUMBER.findall(text)
            return found[-1] if found else ""

        return last_number
    if kind == "regex":
        assert pattern is not None
        rx = re.compile(pattern)

        def by_regex(text: str) -> str:
            m = rx.search(text)
            if m is None:
                return ""
            return normalize(m.group(1) if rx.groups else m.group(0))

        return by_regex
    raise ValueError(f"unknown extract type {kind!r}")
