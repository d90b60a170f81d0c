"""In-place materialization for the search: resident sources, one model, no allocation per candidate.

A search evaluates thousands of recipes over the same sources. A worker
therefore reads every source once, keeps the base weights and the task
vectors (source − base) on its device, holds one model instance, and for each
candidate writes the merged weights straight into that model's parameters:
no disk I/O, no model construction. The numbers are those of the streaming
path (same plan, same inputs, same method calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from evomerge.errors import CheckpointError, MergeError
from evomerge.io.checkpoint import Checkpoint, check_compatible, check_finite
from evomerge.materialize.execute import all_finite, run_task
from evomerge.materialize.load_map import load_map_for
from evomerge.materialize.plan import MergePlan, TensorRef, TensorTask, model_key, plan_merge
from evomerge.materialize.streaming import output_dtype
from evomerge.recipe.model import Recipe


class ResidentSources:
    """Every source's weights held once on ``device``: the base in full, the others as task vectors.

    ``storage_dtype`` trades memory for exactness: float32 (default) reproduces
    the streaming merge bit for bit; bfloat16 halves the memory of 7B sources.
    Without a base model the sources are kept in full.
    """

    def __init__(self, checkpoints: Mapping[str, Checkpoint], base_model: str | None, *,
                 device: str | torch.device = "cpu", storage_dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.storage_dtype = storage_dtype
        self.base_model = model_key(base_model) if base_model else None
        self.checkpoints = dict(checkpoints)
        if len(self.checkpoints) > 1:
            check_compatible(list(self.checkpoints.values()))
        if self.base_model is not None and self.base_model not in self.checkpoints:
            raise CheckpointError(f"base model {self.base_model} is not among the resident sources")
        self._base: dict[str, torch.Tensor] = {}
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        self.nbytes = 0
        base_ckpt = self.checkpoints.get(self.base_model) if self.base_model else None
        if base_ckpt is not None:
            for name in base_ckpt.names:
                self._base[name] = self._load(base_ckpt, name)
        for key, ckpt in self.checkpoints.items():
            if key == self.base_model:
                continue
            store: dict[str, torch.Tensor] = {}
            for name in ckpt.names:
                tensor = self._load(ckpt, name, keep=False)
                if name in self._base:
                    tensor = tensor - self._base[name].float()
                store[name] = tensor.to(storage_dtype)
                self.nbytes += store[name].numel() * store[name].element_size()
            self._tensors[key] = store

    @classmethod
    def from_paths(cls, paths: list[str | Path], base_model: str | Path | None, **kwargs) -> ResidentSources:
        keys = {model_key(p): p for p in paths}
        if base_model is not None:
            keys.setdefault(model_key(base_model), base_model)
        return cls({k: Checkpoint.open(p) for k, p in keys.items()},
                   str(base_model) if base_model is not None else None, **kwargs)

    def _load(self, ckpt: Checkpoint, name: str, *, keep: bool = True) -> torch.Tensor:
        tensor = ckpt.get(name, device=self.device)
        if not all_finite(tensor):
            check_finite(tensor, name=name, path=ckpt.info(name).file)  # raises, naming tensor and file
        tensor = tensor.float()
        if keep:
            stored = tensor.to(self.storage_dtype)
            self.nbytes += stored.numel() * stored.element_size()
            return stored
        return tensor

    @property
    def models(self) -> list[str]:
        return list(self.checkpoints)

    def gather(self, task: TensorTask) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """A task's inputs from resident memory, in the form ``run_task`` takes."""
        if task.base is None:
            if self.base_model is not None:
                # Resident as task vectors, but this task wants raw sources.
                return None, [self._source(ref) for ref in task.sources]
            return None, [self._tensors[ref.model][ref.name].float() for ref in task.sources]
        if task.base.model != self.base_model:
            raise MergeError(f"tensor '{task.out_name}': recipe base {task.base.model} is not the resident base "
                             f"{self.base_model}")
        base = self._base[task.base.name].float()
        deltas = []
        for ref in task.sources:
            if ref.model == self.base_model:
                if ref.name != task.base.name:
                    raise MergeError(f"tensor '{task.out_name}': in-place merging needs aligned layers")
                deltas.append(torch.zeros_like(base))
                continue
            if ref.name != task.base.name:
                raise MergeError(f"tensor '{task.out_name}': in-place merging needs each source's layer aligned "
                                 f"with the base's ({ref.name} vs {task.base.name}); use the streaming merge")
            deltas.append(self._tensors[ref.model][ref.name].float())
        return base, deltas

    def _source(self, ref: TensorRef) -> torch.Tensor:
        if ref.model == self.base_model:
            return self._base[ref.name].float()
        return self._base[ref.name].float() + self._tensors[ref.model][ref.name].float()

    def plan(self, recipe: Recipe) -> MergePlan:
        return plan_merge(recipe, self.checkpoints)


def materialize_into(model: torch.nn.Module, recipe: Recipe, resident: ResidentSources) -> MergePlan:
    """Write ``recipe``'s merged weights into ``model``'s parameters, in place.

    The model receives what ``from_pretrained`` would load from the merged
    checkpoint: each tensor is merged under its checkpoint name (per expert for
    MoE models, as the streaming merge does), rounded to the checkpoint's output
    dtype, then landed through transformers' own key conversions (see
    `evomerge.materialize.load_map`, verified once per model and layout).
    """
    plan = resident.plan(recipe)
    landing = load_map_for(model, plan.layout())
    out_dtype = output_dtype(recipe, resident.checkpoints, plan)
    landing.begin()
    with torch.no_grad():
        for task in plan.tasks:
            base, inputs = resident.gather(task)
            merged = run_task(task, base, inputs)
            if merged.dtype != out_dtype:
                merged = merged.to(out_dtype)  # what the streaming merge writes to disk
            landing.write(task.out_name, merged)
        landing.finish()
    return plan
