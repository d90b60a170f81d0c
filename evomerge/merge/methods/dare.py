"""DARE, "Language Models are Super Mario" (Yu et al., arXiv 2311.03099): drop and rescale.

Each task-vector entry is dropped with probability 1 − density; the kept ones
are rescaled; then plain task arithmetic (``dare_linear``) or TIES sign
election and disjoint merge without the magnitude trim (``dare_ties``).

Rescaling differs between the paper and mergekit: the paper multiplies kept
entries by 1/density; mergekit's ``rescale: true`` (default for both) scales the
dropped task vector back to its original L1 norm, which equals 1/density only
in expectation. We follow mergekit so that exported YAML reproduces the merge;
``sparsify.random_drop(..., rescale="inverse_keep_prob")`` is the paper's form.
Defaults as in mergekit: density 1, normalize false, rescale true, lambda 1.

Randomness comes only from the generator passed in: one sub-generator per
source, seeded in source order (``per_source_generators``), all on the CPU
whatever the tensors' device, so CPU and CUDA draw the same masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.errors import MergeError
from evomerge.merge.base import MergeInputs
from evomerge.merge.methods.params import weights_of
from evomerge.merge.methods.sparsify import per_source_generators, random_drop
from evomerge.merge.methods.task_arithmetic import merge_task_vectors


def require_generator(generator: torch.Generator | None, inputs: MergeInputs, method: str) -> torch.Generator:
    if generator is None:
        raise MergeError(f"tensor '{inputs.name}': method '{method}' is randomised and needs a generator "
                         "(call it with seed=...)")
    return generator


def _dare(consensus: bool, name: str):
    def fn(inputs: MergeInputs, params: Mapping[str, object],
           generator: torch.Generator | None) -> torch.Tensor:
        assert inputs.base is not None
        gens = per_source_generators(require_generator(generator, inputs, name), inputs.n_sources)
        density = cast(list[float], params["density"])
        rescale = "l1" if params["rescale"] else None
        return merge_task_vectors(
            inputs.base, inputs.deltas, weights_of(params),
            normalize=bool(params["normalize"]), lam=float(cast(float, params["lambda"])),
            sparsify=lambda k, delta: random_drop(delta, density[k], gens[k], rescale, inputs.order(k)),
            consensus=consensus,
        )

    return fn


# The entry points evomerge.merge.catalog names for this module's methods.
_dare_linear = _dare(False, "dare_linear")
_dare_ties = _dare(True, "dare_ties")
