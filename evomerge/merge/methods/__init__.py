"""The built-in merge methods' tensor functions, one module per method family.

Each module holds pure tensor functions; its declaration (name, parameters, defaults, input
contract) is in ``evomerge.merge.catalog``, which names the module's entry point, so a module
is imported (with torch) only when its method first merges a tensor. Shared pieces live in
``sparsify`` (top-k, DARE, breadcrumbs, DELLA masks), ``consensus`` (TIES sign election and
disjoint merge) and ``task_arithmetic`` (the generalised task-vector merge every sparsifying
method builds on); ``params`` holds the parameter declarations several methods share.
"""

from evomerge.merge.methods.lines import lines_factor

__all__ = ["lines_factor"]
