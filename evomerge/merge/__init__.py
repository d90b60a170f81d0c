"""Merge algebra: pure tensor functions behind one registry of named, declared methods.

Importing the package (and its registry) does not import torch: the declarations are data
(``spec``, ``catalog``); ``MergeInputs`` and the tensor functions load torch when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.merge.registry import all_methods, get_method, register
from evomerge.merge.spec import MergeFn, MergeMethod, ParamSpec

if TYPE_CHECKING:
    from evomerge.merge.base import MergeInputs

__all__ = ["MergeFn", "MergeInputs", "MergeMethod", "ParamSpec", "all_methods", "get_method", "register"]


def __getattr__(name: str) -> object:
    # MergeInputs holds tensors: importing it imports torch, so it is imported only when asked for (PEP 562).
    if name == "MergeInputs":
        from evomerge.merge.base import MergeInputs

        return MergeInputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
