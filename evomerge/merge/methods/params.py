"""Parameter declarations shared by the methods, with mergekit's names, defaults and ranges.

mergekit facts: ``weight`` is required per model and unbounded (negative and
> 1 allowed); ``density`` defaults to 1 (no sparsification); ``gamma`` defaults
to 0.01 and ``epsilon`` to 0.15; ``lambda`` defaults to 1; ``normalize`` and
``rescale`` defaults differ per method and are given at each registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from evomerge.merge.spec import ParamSpec

WEIGHT = ParamSpec(
    "weight", "per_source", default=None,
    help="this source's coefficient; any real number (negative subtracts, > 1 amplifies)",
)
DENSITY = ParamSpec(
    "density", "per_source", default=1.0, low=0.0, high=1.0, low_open=True,
    help="fraction of this source's task-vector entries kept, in (0, 1]",
)
GAMMA = ParamSpec(
    "gamma", "per_source", default=0.01, low=0.0, high=1.0,
    help="fraction of the largest-magnitude entries dropped as outliers (breadcrumbs)",
)
EPSILON = ParamSpec(
    "epsilon", "per_source", default=0.15, low=0.0, high=0.5,
    help="spread of DELLA's keep probabilities around density; density ± epsilon must lie in (0, 1)",
)
LAMBDA = ParamSpec(
    "lambda", "global", default=1.0,
    help="scale of the merged task vector before it is added to the base",
)


INT8_MASK = ParamSpec(
    "int8_mask", "global", default=False, kind="bool", inert=True,
    help="mergekit stores its sign/selection masks as int8 to save memory; evomerge's masks are boolean "
         "already: accepted and kept in the recipe, no effect on the numbers",
)
# mergekit's task_arithmetic declares the sparsifying methods' keys but has no sparsifier: it accepts them
# and ignores them. So do we (a density below 1 there is no TIES trim; use ties or dare_linear for that).
IGNORED_DENSITY = ParamSpec(
    "density", "per_source", default=1.0, low=0.0, high=1.0, low_open=True, inert=True,
    help="accepted as mergekit's task_arithmetic accepts it: it sparsifies nothing there, nor here",
)
IGNORED_RESCALE = ParamSpec(
    "rescale", "global", default=False, kind="bool", inert=True,
    help="accepted as mergekit's task_arithmetic accepts it: nothing is sparsified, so nothing is rescaled",
)


def normalize(default: bool) -> ParamSpec:
    """``normalize``: divide by the sum of weights (of agreeing entries, for sign consensus)."""
    return ParamSpec("normalize", "global", default=default, kind="bool",
                     help="divide the merged task vector by the sum of weights")


def rescale(default: bool) -> ParamSpec:
    """``rescale``: restore each sparsified task vector's L1 norm (mergekit's meaning)."""
    return ParamSpec("rescale", "global", default=default, kind="bool",
                     help="rescale each sparsified task vector to its L1 norm before dropping")


def weights_of(params: Mapping[str, object]) -> list[float]:
    """The validated per-source ``weight`` list of resolved parameters."""
    return cast(list[float], params["weight"])
