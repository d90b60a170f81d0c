"""Reading a task's JSONL splits, with errors that name the file and the line.

A search may run for hours; a typo in line 812 of a data file must fail when the
task is loaded, with the file and line in the message, not inside a worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evomerge.errors import FitnessError


def read_jsonl(path: Path, *, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Return the records of a JSONL file, each checked to have the ``required`` keys and types.

    Blank lines are skipped. A missing or empty file, bad JSON, or a missing or
    mistyped key raises FitnessError naming the file (and line).
    """
    if not path.is_file():
        raise FitnessError(f"data file not found: {path}")
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FitnessError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise FitnessError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            for key, typ in required.items():
                if key not in rec:
                    raise FitnessError(f"{path}:{lineno}: missing key '{key}'")
                value = rec[key]
                if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
                    want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
                    raise FitnessError(
                        f"{path}:{lineno}: key '{key}' must be {want}, got {type(value).__name__}"
                    )
            records.append(rec)
    if not records:
        raise FitnessError(f"data file is empty: {path}")
    return records


def resolve(base_dir: Path, rel: str) -> Path:
    """Data paths in a task YAML are relative to the YAML file."""
    p = Path(rel).expanduser()
    return p if p.is_absolute() else base_dir / p
