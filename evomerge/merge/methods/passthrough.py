"""Passthrough: one source's tensor, optionally scaled (mergekit's ``passthrough``).

Used for layer slices and layer stacking, where each output tensor comes
from exactly one source; mergekit's optional per-model ``scale`` multiplies it
(default 1 here, which mergekit expresses by leaving ``scale`` out). The
result is always a new tensor, never the caller's source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from evomerge.merge.base import MergeInputs


def _passthrough(inputs: MergeInputs, params: Mapping[str, object],
                 generator: torch.Generator | None) -> torch.Tensor:
    (source,) = inputs.sources
    (scale,) = cast(list[float], params["scale"])
    return source.clone() if scale == 1 else source * scale
