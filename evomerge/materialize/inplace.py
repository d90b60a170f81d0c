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
from types import MappingProxyType

import torch

from evomerge.errors import CheckpointError, MergeError
from evomerge.io.checkpoint import Checkpoint, check_compatible, check_finite
from evomerge.materialize.execute import all_finite, run_task
from evomerge.materialize.load_map import load_map_for
from evomerge.materialize.plan import MergePlan, TensorRef, TensorTask, model_key, plan_merge
from evomerge.materialize.streaming import output_dtype
from evomerge.recipe.layout import place_of
from evomerge.recipe.model import Recipe
from evomerge.recipe.tokenizer import TokenizerSpec
from evomerge.vocab.build import MergedVocabulary, build_vocabulary
from evomerge.vocab.rows import RowAssembly, is_vocabulary_tensor, row_assembly


class ResidentSources:
    """Every source's weights held once on ``device``: the base in full, the others as task vectors.

    ``storage_dtype`` trades memory for exactness: float32 (default) reproduces
    the streaming merge bit for bit; bfloat16 halves the memory of 7B sources.
    Without a base model the sources are kept in full.

    With ``tokenizer`` (mergekit's tokenizer settings) the sources may have
    different vocabularies: their embedding and head tensors are laid out once,
    here, in the merged vocabulary (``vocabulary``) exactly as the streaming
    merge lays them out for the models in this order (non-base sources, then
    the base), and every candidate must plan that same layout.
    """

    vocabulary: MergedVocabulary | None = None
    _layouts: Mapping[str, RowAssembly] = MappingProxyType({})

    def __init__(self, checkpoints: Mapping[str, Checkpoint], base_model: str | None, *,
                 device: str | torch.device = "cpu", storage_dtype: torch.dtype = torch.float32,
                 tokenizer: TokenizerSpec | None = None) -> None:
        self.device = torch.device(device)
        self.storage_dtype = storage_dtype
        self.base_model = model_key(base_model) if base_model else None
        self.checkpoints = dict(checkpoints)
        if len(self.checkpoints) > 1:
            check_compatible(list(self.checkpoints.values()), vocab_may_differ=tokenizer is not None)
        if self.base_model is not None and self.base_model not in self.checkpoints:
            raise CheckpointError(f"base model {self.base_model} is not among the resident sources")
        self._base: dict[str, torch.Tensor] = {}
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        self.nbytes = 0
        if tokenizer is not None:
            self.vocabulary, self._layouts = self._vocabulary_layouts(tokenizer)
        base_ckpt = self.checkpoints.get(self.base_model) if self.base_model else None
        if base_ckpt is not None:
            for name in base_ckpt.names:
                if name not in self._layouts:
                    self._base[name] = self._load(base_ckpt, name)
        for key, ckpt in self.checkpoints.items():
            if key == self.base_model:
                continue
            store: dict[str, torch.Tensor] = {}
            for name in ckpt.names:
                if name in self._layouts:
                    continue
                tensor = self._load(ckpt, name, keep=False)
                if name in self._base:
                    tensor = tensor - self._base[name].float()
                store[name] = tensor.to(storage_dtype)
                self.nbytes += store[name].numel() * store[name].element_size()
            self._tensors[key] = store
        for name, layout in self._layouts.items():
            self._load_vocabulary_tensor(name, layout)

    def _vocabulary_layouts(self, spec: TokenizerSpec) -> tuple[MergedVocabulary, dict[str, RowAssembly]]:
        """The merged vocabulary and each vocabulary tensor's layout, from tokenizer files and headers."""
        others = [k for k in self.checkpoints if k != self.base_model]
        order = others + ([self.base_model] if self.base_model else [])
        referenced = ([self.base_model] if self.base_model else []) + others
        vocab = build_vocabulary(spec, self.base_model, tuple(referenced))
        first = self.checkpoints[order[0]]
        layouts = {}
        for name in first.names:
            if place_of(name).layer is None and is_vocabulary_tensor(name, first):
                rows = {m: self.checkpoints[m].info(name).shape[0] for m in order}
                layouts[name] = row_assembly(vocab, order, self.base_model, rows, tensor=name)
        return vocab, layouts

    def _load_vocabulary_tensor(self, name: str, layout: RowAssembly) -> None:
        """Every source's rows of ``name`` in the merged vocabulary, held as base + task vectors like the rest."""
        raw = {m: self._load(self.checkpoints[m], name, keep=False) for m in layout.models}
        rows = layout.assemble(raw)
        if self.base_model is not None:
            self._base[name] = rows[self.base_model].to(self.storage_dtype)
            self.nbytes += self._base[name].numel() * self._base[name].element_size()
        for model, tensor in rows.items():
            if model == self.base_model:
                continue
            if self.base_model is not None:
                tensor = tensor - self._base[name].float()
            stored = self._tensors[model][name] = tensor.to(self.storage_dtype)
            self.nbytes += stored.numel() * stored.element_size()

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
        self._check_layout(task)
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

    def _check_layout(self, task: TensorTask) -> None:
        """Refuse a vocabulary tensor whose rows the recipe would lay out otherwise than the resident ones."""
        held = self._layouts.get(task.sources[0].name) if task.sources else None
        if task.vocab is None and held is None:
            return
        if task.vocab is None or held is None or task.vocab.key != held.key:
            raise MergeError(
                f"tensor '{task.out_name}': the recipe lays out vocabulary rows otherwise than the resident sources "
                f"(resident: {'a merged vocabulary' if held is not None else 'their own vocabularies'}); give the "
                "recipe the sources' tokenizer settings, models (in the same order) and base, or merge it with "
                "the streaming merge")

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
