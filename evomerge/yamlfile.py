"""Reading a user's config (YAML file or mapping) with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evomerge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed content of ``path``; ConfigError naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the key path the way a user wrote it."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def validate_mapping(model: type[M], data: Any, *, source: str, what: str) -> M:
    """``model`` validated from ``data``; ConfigError naming ``source`` and every bad key otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {what} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid {what}\n{format_validation_error(exc)}") from None
