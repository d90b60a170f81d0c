"""The built-in merge methods; importing this package registers each of them once.

One module per method family (pure tensor functions plus one registration);
shared pieces live in ``sparsify`` (top-k, DARE, breadcrumbs, DELLA masks),
``consensus`` (TIES sign election and disjoint merge) and ``task_arithmetic``
(the generalised task-vector merge every sparsifying method builds on).
"""

from evomerge.merge.methods import (
    arcee_fusion,
    breadcrumbs,
    dare,
    della,
    isotropic,
    karcher,
    linear,
    model_stock,
    multislerp,
    nearswap,
    nuslerp,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
    ties,
    tsv,
)
from evomerge.merge.methods.lines import lines_factor

__all__ = [
    "arcee_fusion",
    "breadcrumbs",
    "dare",
    "della",
    "isotropic",
    "karcher",
    "linear",
    "lines_factor",
    "model_stock",
    "multislerp",
    "nearswap",
    "nuslerp",
    "passthrough",
    "ram",
    "sce",
    "slerp",
    "task_arithmetic",
    "ties",
    "tsv",
]
