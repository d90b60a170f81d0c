"""Generated code must pass the task's unit tests: pass@1 with greedy decoding (CycleQD, arXiv 2410.14735).

The code is cut out of the generation (the first fenced block, else the whole
text), the example's ``tests`` (assert statements, a string or a list of them) are
appended, and the program runs in :mod:`evomerge.fitness.sandbox`: a temporary
directory, CPU-time, memory, file-size and process limits, no network, its whole
process tree killed at the end.

    kind: python
    function: evomerge.fitness.scorers.code:pass_at_1
    args: {cpu_seconds: 2, wall_seconds: 5, memory_mb: 512}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evomerge.fitness.sandbox import Limits, run_python

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The first fenced code block (an unclosed one runs to the end), else the whole text."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def program(generation: str, example: Mapping[str, Any]) -> str:
    tests = example["tests"]
    tests = "\n".join(tests) if isinstance(tests, list) else str(tests)
    return f"{example.get('prefix', '')}{extract_code(generation)}\n\n{tests}\n"


def pass_at_1(generations: Sequence[str], examples: Sequence[Mapping[str, Any]], *, cpu_seconds: int = 2,
              wall_seconds: float = 5.0, memory_mb: int = 512, processes: int = 8, workers: int = 2) -> list[float]:
    """1.0 where the program (extracted code + the example's tests) exits 0 within the limits."""
    limits = Limits(cpu_seconds=cpu_seconds, wall_seconds=wall_seconds, memory_mb=memory_mb, processes=processes)
    programs = [program(g, ex) for g, ex in zip(generations, examples, strict=True)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # the children run, the threads only wait
        return [float(o.passed) for o in pool.map(lambda p: run_python(p, limits), programs)]
