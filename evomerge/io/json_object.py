"""Reading a checkpoint's JSON side files (config.json, adapter_config.json) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evomerge.errors import CheckpointError


def read_json_object(file: Path) -> dict[str, Any]:
    """The JSON object in ``file``; CheckpointError naming the file when it is unreadable or not an object."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc}); fix or re-download it") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value
