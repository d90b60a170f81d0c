"""Merge algebra: pure tensor functions behind one registry of named, declared methods."""

from evomerge.merge.base import MergeFn, MergeInputs, MergeMethod, ParamSpec
from evomerge.merge.registry import all_methods, get_method, register

__all__ = ["MergeFn", "MergeInputs", "MergeMethod", "ParamSpec", "all_methods", "get_method", "register"]
