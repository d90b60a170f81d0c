"""An Optuna sampler's resumable state as plain data: its random states and GP warm starts.

Pickling a live sampler breaks whenever Optuna adds an unpicklable member (optuna 5 holds a
``threading.Lock`` in NSGA-II/III) and ties a checkpoint to one release's object layout. A sampler
is instead rebuilt from its settings and given back what its settings cannot recreate:

* every ``numpy.random.RandomState`` reachable from its attributes (Optuna wraps them in
  ``LazyRandomState``; sub-strategies share or own theirs), recorded by attribute path;
* ``GPSampler``'s kernel-parameter cache (the previous fit's lengthscales, scale and noise, used as
  the starting point of the next fit, so it changes the next ask).

Caches that Optuna rebuilds from the study (NSGA's generation bookkeeping, search-space caches) are
not recorded: the restored sampler sees a freshly replayed study and recomputes them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from evomerge.strategies.base import StrategyError

_GP_CACHES = ("_gprs_cache_list", "_constraints_gprs_cache_list")
_GP_FIELDS = ("inverse_squared_lengthscales", "kernel_scale", "noise_var")


def _random_states(obj: Any, path: str = "", seen: set[int] | None = None) -> dict[str, np.random.RandomState]:
    """Every RandomState reachable through ``vars()`` of ``obj``, keyed by its first attribute path."""
    seen = set() if seen is None else seen
    found: dict[str, np.random.RandomState] = {}
    if id(obj) in seen or not hasattr(obj, "__dict__") or isinstance(obj, type):
        return found
    seen.add(id(obj))
    for name, value in sorted(vars(obj).items()):
        sub = f"{path}.{name}" if path else name
        if isinstance(value, np.random.RandomState):
            found[sub] = value
        elif type(value).__module__.startswith("optuna"):
            found.update(_random_states(value, sub, seen))
    return found


def _plain_rng(state: tuple[Any, ...]) -> list[Any]:
    kind, keys, pos, has_gauss, cached = state
    return [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _materialize_lazy_states(sampler: Any) -> None:
    """Create every lazily-created RandomState now, so both sides list the same paths."""
    stack, seen = [sampler], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not hasattr(obj, "__dict__") or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if type(obj).__name__ == "LazyRandomState":
            _ = obj.rng
        stack.extend(v for v in vars(obj).values() if type(v).__module__.startswith("optuna"))


def sampler_state(sampler: Any) -> dict[str, Any]:
    """The plain-data state of ``sampler`` (lists, numbers and strings only)."""
    _materialize_lazy_states(sampler)
    state: dict[str, Any] = {
        "rngs": {path: _plain_rng(rs.get_state()) for path, rs in _random_states(sampler).items()},
    }
    for cache in _GP_CACHES:
        if hasattr(sampler, cache):
            gprs = getattr(sampler, cache)
            state[cache] = None if gprs is None else [_plain_kernel_params(g) for g in gprs]
    return state


def load_sampler_state(sampler: Any, state: dict[str, Any], *, owner: str) -> None:
    """Give a freshly built ``sampler`` the random states and warm starts recorded by :func:`sampler_state`."""
    _materialize_lazy_states(sampler)
    targets = _random_states(sampler)
    saved = state["rngs"]
    if set(targets) != set(saved):
        raise StrategyError(
            f"{owner}: the saved sampler state does not fit this optuna's sampler "
            f"(random states saved at {sorted(saved)}, this sampler has {sorted(targets)}); "
            "resume with the optuna version that wrote the checkpoint"
        )
    for path, (kind, keys, pos, has_gauss, cached) in saved.items():
        targets[path].set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    for cache in _GP_CACHES:
        if cache in state:
            if not hasattr(sampler, cache):
                raise StrategyError(f"{owner}: this optuna's GPSampler has no {cache}; resume with the saved version")
            setattr(sampler, cache, None if state[cache] is None else [_kernel_params(g) for g in state[cache]])


def _plain_kernel_params(gpr: Any) -> dict[str, Any]:
    return {f: np.asarray(getattr(gpr, f).detach().cpu(), dtype=np.float64).tolist() for f in _GP_FIELDS}


def _kernel_params(fields: dict[str, Any]) -> SimpleNamespace:
    """What GPSampler reads from a cached regressor: the three kernel parameters, as float64 tensors."""
    import torch

    return SimpleNamespace(**{f: torch.tensor(fields[f], dtype=torch.float64) for f in _GP_FIELDS})
