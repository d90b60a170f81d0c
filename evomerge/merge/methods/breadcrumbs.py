"""Model Breadcrumbs (Davari & Belilovsky, arXiv 2312.06795): drop outliers and small entries.

Per task vector, the largest ``gamma`` fraction by magnitude and then the
smallest entries are masked so that a ``density`` fraction remains; then task
arithmetic (``breadcrumbs``) or TIES sign consensus (``breadcrumbs_ties``).
mergekit's defaults: density 1 (which disables the mask, gamma included),
gamma 0.01, normalize false, rescale false, lambda 1. See
``sparsify.magnitude_outliers`` for the one place we differ (gamma·n < 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of
from evomerge.merge.methods.sparsify import magnitude_outliers
from evomerge.merge.methods.task_arithmetic import merge_task_vectors


def _breadcrumbs(consensus: bool):
    def fn(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
        assert inputs.base is not None
        density = cast(list[float], params["density"])
        gamma = cast(list[float], params["gamma"])
        rescale = "l1" if params["rescale"] else None
        return merge_task_vectors(
            inputs.base, inputs.deltas, weights_of(params),
            normalize=bool(params["normalize"]), lam=float(cast(float, params["lambda"])),
            sparsify=lambda k, delta: magnitude_outliers(delta, density[k], gamma[k], rescale,
                                                          order=inputs.order(k)),
            consensus=consensus,
        )

    return fn


# The entry points evomerge.merge.catalog names for this module's methods.
_breadcrumbs_linear = _breadcrumbs(False)
_breadcrumbs_ties = _breadcrumbs(True)
