"""DELLA-Merging (Deep et al., arXiv 2406.11617): MagPrune, then merge.

Each task-vector entry is dropped at random with a probability that falls
with its magnitude rank: keep probabilities run linearly from density − ε
(smallest, along each row) to density + ε (largest), so drop probabilities
p_i are spread ±ε around 1 − density. Then TIES sign election and disjoint
merge (``della``) or plain task arithmetic (``della_linear``).

Differences from the paper, following mergekit: kept entries are rescaled
by matching the task vector's L1 norm (``rescale: true``, the default), not
by 1/(1 − p_i) per entry (``sparsify.della_magprune(...,
rescale="inverse_keep_prob")`` is the paper's form); ranks are taken per row
(dim 1) as mergekit does; density ± ε must lie strictly inside (0, 1).
Defaults as mergekit's: density 1, epsilon 0.15, rescale true, normalize
true for ``della`` and false for ``della_linear``, lambda 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.dare import require_generator
from evomerge.merge.methods.params import weights_of
from evomerge.merge.methods.sparsify import check_della_band, della_magprune, per_source_generators
from evomerge.merge.methods.task_arithmetic import merge_task_vectors


def _della(consensus: bool, name: str):
    def fn(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
        assert inputs.base is not None
        density = cast(list[float], params["density"])
        epsilon = cast(list[float], params["epsilon"])
        for k, (d, e) in enumerate(zip(density, epsilon, strict=True)):
            check_della_band(d, e, where=f"tensor '{inputs.name}', source {k}")
        gens = per_source_generators(require_generator(generator, inputs, name), inputs.n_sources)
        rescale = "l1" if params["rescale"] else None
        return merge_task_vectors(
            inputs.base, inputs.deltas, weights_of(params),
            normalize=bool(params["normalize"]), lam=float(cast(float, params["lambda"])),
            sparsify=lambda k, delta: della_magprune(delta, density[k], epsilon[k], gens[k], rescale,
                                                      inputs.order(k)),
            consensus=consensus,
        )

    return fn


# The entry points evomerge.merge.catalog names for this module's methods.
_della_ties = _della(True, "della")
_della_linear = _della(False, "della_linear")
