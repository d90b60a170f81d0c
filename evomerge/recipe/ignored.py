"""Keys mergekit 0.1.5 accepts and ignores: accepted here too, kept in the recipe, and each named in a warning.

Published configs carry keys that change nothing in mergekit; refusing them would refuse configs mergekit
merges, accepting them quietly would be a recipe that does not do what it says. So evomerge accepts them,
keeps them (they round-trip to mergekit YAML) and warns once per key: "'weight' on model_stock has no
effect (mergekit ignores it too)". Which keys:

- a parameter some mergekit method declares, given to a method that does not declare it (``weight`` on
  ``model_stock``, a per-model ``weight`` on ``sce``): mergekit reads only its method's parameters;
- mergekit-evolve's genome options pasted into ``parameters`` (``smooth``, ``allow_negative_weights``);
- at the top level, such a parameter or a ``tokenizer:`` block key written there (``select_topk``,
  ``int8_mask``, ``pad_to_multiple_of``): mergekit's configuration ignores keys it does not know;
- a slice source's ``revision``: mergekit reads a revision only from ``model: name@revision``.

Any other key (a typo: ``dype``, ``dnesity``) stays an error naming it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence

from evomerge.errors import IgnoredKeyWarning

NO_EFFECT = "has no effect (mergekit ignores it too)"
# mergekit-evolve's genome options (mergekit/evo/genome.py), found in merge configs' parameters
EVOLVE_OPTIONS = frozenset({"smooth", "allow_negative_weights"})
# keys of mergekit's tokenizer: block that configs also write at the top level
TOKENIZER_BLOCK_KEYS = frozenset({"pad_to_multiple_of"})
SLICE_SOURCE_KEYS = frozenset({"revision"})


@functools.cache
def mergekit_parameter_names() -> frozenset[str]:
    """Every parameter a mergekit method declares (evomerge's declarations of them), and evolve's options.

    Cached: every Recipe asks (a search builds thousands); mergekit's methods are built in, registered once.
    """
    from evomerge.merge.registry import all_methods

    return frozenset(p.name for m in all_methods() if m.mergekit_name for p in m.params) | EVOLVE_OPTIONS


def ignored_at_top_level(key: str) -> bool:
    """True when mergekit ignores ``key`` at a config's top level and it names a setting of another place."""
    return key in TOKENIZER_BLOCK_KEYS or key in mergekit_parameter_names()


def warn_ignored(found: Mapping[str, Sequence[str]], method: str) -> None:
    """One warning per key of ``found`` (key -> where in the recipe), for a recipe merged with ``method``."""
    for key, places in found.items():
        warnings.warn(f"'{key}' on {method} {NO_EFFECT} ({', '.join(places)})", IgnoredKeyWarning, stacklevel=3)
