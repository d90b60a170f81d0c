"""TIES-merging (Yadav et al., arXiv 2306.01708): trim, elect sign, disjoint merge.

Each task vector keeps its top ``density`` fraction by magnitude, signs are
elected on the weighted trimmed vectors, and only agreeing entries are
averaged (divided by the sum of the agreeing weights when ``normalize``, the
default) and added to the base. mergekit's defaults: density 1, normalize
true, rescale false, lambda 1; ``rescale: true`` restores each trimmed task
vector's L1 norm (not in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of
from evomerge.merge.methods.sparsify import magnitude_prune
from evomerge.merge.methods.task_arithmetic import merge_task_vectors


def _ties(inputs: MergeInputs, params: Mapping[str, object],
          generator: torch.Generator | None) -> torch.Tensor:
    assert inputs.base is not None
    density = cast(list[float], params["density"])
    rescale = "l1" if params["rescale"] else None
    return merge_task_vectors(
        inputs.base, inputs.deltas, weights_of(params),
        normalize=bool(params["normalize"]), lam=float(cast(float, params["lambda"])),
        sparsify=lambda k, delta: magnitude_prune(delta, density[k], rescale, order=inputs.order(k)),
        consensus=True,
    )
