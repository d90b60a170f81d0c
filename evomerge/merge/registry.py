"""One registry from method name to MergeMethod; duplicate names are refused."""

from __future__ import annotations

from evomerge.errors import MergeError
from evomerge.merge.spec import MergeMethod

_REGISTRY: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    for key in (method.name, *method.aliases):
        if key in _REGISTRY:
            raise ValueError(f"merge method '{key}' is registered twice")
        _REGISTRY[key] = method
    return method


def get_method(name: str) -> MergeMethod:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(m.name for m in set(_REGISTRY.values())))
        raise MergeError(f"unknown merge method '{name}' (known: {known})") from None


def all_methods() -> list[MergeMethod]:
    _load_builtin_methods()
    return sorted({m.name: m for m in _REGISTRY.values()}.values(), key=lambda m: m.name)


def _load_builtin_methods() -> None:
    # Importing the catalog registers every built-in method exactly once (declarations only: no torch).
    import evomerge.merge.catalog  # noqa: F401
