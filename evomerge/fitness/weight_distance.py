"""Distance of a candidate's weights to a base checkpoint: MM-MO's sparsity objective (arXiv 2407.00487).

MM-MO adds "−Σ|θ_merged − θ₀|" as an extra objective so the search also prefers merges that stay
close to the shared base (the authors' code sums |Δ| over every parameter of the merged model). Here it
is the *mean* ``Σ|θ − θ₀| / #parameters``, which ranks candidates identically and is comparable
across model sizes; the direction is ``minimize``. It is computed from the model handed to
``evaluate`` (never from the recipe), so every merge method and search space gets it the same way.

The base tensors are read once per device and cached on the task (not pickled with it: a Ray
worker reads its own copy on first use). The task has no examples: ``per_example`` holds one value,
the negative distance (higher is better, as for every task).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import CheckpointError, FitnessError
from evomerge.fitness.base import SPLITS, Direction, TaskResult, check_indices, check_split
from evomerge.fitness.config import WeightDistanceSpec
from evomerge.fitness.data import resolve
from evomerge.fitness.decoding import model_device


def mean_abs_distance(params: dict[str, torch.Tensor], base: dict[str, torch.Tensor], *, task: str = "weight_distance",
                      base_path: str = "<base>") -> tuple[float, float, int]:
    """(mean, sum, count) of |θ − θ₀| over every entry of ``params``; a name or shape missing from ``base`` raises.

    Sums are accumulated in float64 per tensor so the mean does not drift with model size.
    """
    total, count = 0.0, 0
    for name, p in params.items():
        b = base.get(name)
        if b is None:
            raise FitnessError(f"task '{task}': parameter {name!r} of the evaluated model is not in the base "
                               f"checkpoint {base_path}; set `base:` to the model the sources were fine-tuned from")
        if tuple(b.shape) != tuple(p.shape):
            raise FitnessError(f"task '{task}': parameter {name!r} has shape {list(p.shape)} but the base "
                               f"checkpoint {base_path} holds {list(b.shape)}; set `base:` to a checkpoint of the "
                               "same architecture")
        diff = p.detach().to(torch.float64) - b.to(device=p.device, dtype=torch.float64)
        total += float(diff.abs().sum())
        count += p.numel()
    if count == 0:
        raise FitnessError(f"task '{task}': the evaluated model has no parameters to compare with {base_path}")
    return total / count, total, count


class WeightDistanceTask:
    """Mean absolute difference between the model's parameters and the ``base`` checkpoint's."""

    kind = "weight_distance"
    per_example_sign = -1.0  # objective = distance, its one per-example score = -distance
    score_range: tuple[float, float] | None = None  # never needed: its one "example" is scored at the first stage
    race_refusal: str | None = None

    def __init__(self, spec: WeightDistanceSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "minimize"
        self.base_path = resolve(base_dir, spec.base)
        self.source = source
        from evomerge.io.checkpoint import Checkpoint

        try:  # headers only: a wrong path fails when the task is loaded, not in a worker
            with Checkpoint.open(self.base_path):
                pass
        except CheckpointError as exc:
            raise FitnessError(f"{source}: key 'base': {exc}") from None
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}

    def _base_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._cache:
            from evomerge.io.checkpoint import Checkpoint

            with Checkpoint.open(self.base_path) as ckpt:
                self._cache[key] = {name: ckpt.get(name, device=device) for name in ckpt.names}
        return self._cache[key]

    def size(self, split: str) -> int:
        check_split(self.name, split, SPLITS)
        return 1

    def evaluate(self, model: Any, tokenizer: Any = None, *, split: str = "train", indices: Any = None) -> TaskResult:
        """The same value for every split: the distance does not depend on data (one "example", index 0)."""
        check_split(self.name, split, SPLITS)
        idx = check_indices(self.name, split, indices, 1)
        if idx is not None and idx.size != 1:
            raise FitnessError(f"task '{self.name}': weight distance has one example (index 0), asked for "
                               f"{idx.tolist()}")
        t0 = time.perf_counter()
        params = dict(model.named_parameters())
        mean, total, count = mean_abs_distance(params, self._base_on(model_device(model)), task=self.name,
                                               base_path=str(self.base_path))
        return TaskResult(task=self.name, split=split, objectives={self.objective_name: mean}, per_example=[-mean],
                          n=1, seconds=time.perf_counter() - t0, details={"l1": total, "n_parameters": count})
