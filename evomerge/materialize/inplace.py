"""In-place materialization for the search: resident sources, one model, no allocation per candidate.

A search evaluates thousands of recipes over the same sources. A worker
therefore reads every source once, keeps the base weights and the task
vectors (source − base) on its device, holds one model instance, and for each
candidate writes the merged weights straight into that model's parameters:
no disk I/O, no model construction. The numbers are those of the streaming
path (same plan, same inputs, same method calls).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import torch

from evomerge.errors import CheckpointError, MergeError
from evomerge.io.checkpoint import Checkpoint, check_compatible, check_finite
from evomerge.io.mapped import MappedFiles
from evomerge.materialize.execute import BufferPool, all_finite, run_task
from evomerge.materialize.load_map import load_map_for
from evomerge.materialize.plan import MergePlan, TensorRef, TensorTask, model_key, plan_merge
from evomerge.materialize.streaming import output_dtype
from evomerge.merge.methods.sparsify import MagnitudeOrder, RowRanks, SourceNorm
from evomerge.recipe.layout import place_of
from evomerge.recipe.model import Recipe
from evomerge.recipe.tokenizer import TokenizerSpec
from evomerge.vocab.build import MergedVocabulary, build_vocabulary
from evomerge.vocab.rows import RowAssembly, is_vocabulary_tensor, row_assembly

# per sparsifying method, the source-only table of each task vector it reuses across candidates
SOURCE_TABLES: Mapping[str, type[SourceNorm]] = MappingProxyType({
    "ties": MagnitudeOrder, "breadcrumbs": MagnitudeOrder, "breadcrumbs_ties": MagnitudeOrder,
    "della": RowRanks, "della_linear": RowRanks, "dare_ties": SourceNorm, "dare_linear": SourceNorm,
})


class ResidentSources:
    """Every source's weights held once on ``device``: the base in full, the others as task vectors.

    ``storage_dtype`` trades memory for exactness: float32 (default) reproduces
    the streaming merge bit for bit; bfloat16 halves the memory of 7B sources.
    Without a base model the sources are kept in full. With a ``budget`` smaller
    than the sources, the rest is kept in pinned host memory (CUDA) or read from
    the mapped files per candidate (``tiers`` says which, per tensor; the same
    placement ``evomerge plan`` prints), with the same values in every tier.

    With ``tokenizer`` (mergekit's tokenizer settings) the sources may have
    different vocabularies: their embedding and head tensors are laid out once,
    here, in the merged vocabulary (``vocabulary``) exactly as the streaming
    merge lays them out for the models in this order (non-base sources, then
    the base), and every candidate must plan that same layout. Those tensors
    are always held on the device.

    A worker split over several ``devices`` (``evomerge.exec.device_split``) gives
    each checkpoint tensor's device index in ``placement``: the device of the
    parameter it merges into. Its base, task vectors and orders live there, and
    its merge runs there; ``budget`` is then one budget per device.
    """

    vocabulary: MergedVocabulary | None = None
    _layouts: Mapping[str, RowAssembly] = MappingProxyType({})
    _devices: tuple[torch.device, ...] = ()
    placement: Mapping[str, int] = MappingProxyType({})  # checkpoint tensor name -> device index (default 0)
    _device_budgets: list[int | None] | None = None

    def __init__(self, checkpoints: Mapping[str, Checkpoint], base_model: str | None, *,
                 device: str | torch.device = "cpu", storage_dtype: torch.dtype = torch.float32,
                 tokenizer: TokenizerSpec | None = None, budget: int | Sequence[int | None] | None = None,
                 host_budget: int = 0, devices: Sequence[str | torch.device] | None = None,
                 placement: Mapping[str, int] | None = None) -> None:
        """``budget``: bytes the sources may take on ``device`` (None: no limit). What does not fit goes, tensor by
        tensor (the base first), to pinned host memory up to ``host_budget`` (CUDA only), and the rest is read
        from the memory-mapped files for every candidate: the same values in every tier, only slower.
        ``devices`` and ``placement``: a worker split over several devices (then ``device`` is unused and
        ``budget`` may be a list, one per device).
        """
        from evomerge.exec.memory_plan import DEVICE, FILES, HOST, Slot, place

        if devices:
            self._devices = tuple(torch.device(d) for d in devices)
            self.placement = MappingProxyType(dict(placement or {}))
            bad = {n: i for n, i in self.placement.items() if not 0 <= i < len(self._devices)}
            if bad:
                raise MergeError(f"placement of {next(iter(bad))} on device {next(iter(bad.values()))}: the worker "
                                 f"has {len(self._devices)} devices")
        self.device = self._devices[0] if self._devices else torch.device(device)
        if isinstance(budget, Sequence):
            if len(budget) != len(self.devices):
                raise MergeError(f"{len(budget)} source budgets for {len(self.devices)} devices")
            self._device_budgets = list(budget)
            budget = None if any(b is None for b in budget) else sum(b for b in budget if b is not None)
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
        order = sorted(self.checkpoints, key=lambda k: k != self.base_model)  # the base first
        itemsize = storage_dtype.itemsize
        slots = [Slot(k, n, math.prod(self.checkpoints[k].info(n).shape) * itemsize, 0, self.placement.get(n, 0))
                 for k in order for n in self.checkpoints[k].names if n not in self._layouts]
        unlimited = sum(s.resident for s in slots)
        capacities = [(DEVICE, budget if budget is not None else unlimited)]
        if self.device.type == "cuda" and host_budget > 0:
            capacities.append((HOST, host_budget))
        per_device = None if self._device_budgets is None else [unlimited if b is None else b
                                                                 for b in self._device_budgets]
        # (key, name) -> device | host | files (vocabulary tensors: device)
        self.tiers = place(slots, capacities, per_device)
        self.streamed = any(t != DEVICE for t in self.tiers.values())
        self._copy_streams: dict[torch.device, torch.cuda.Stream] = {}
        self._pool = BufferPool()  # float32 buffers for tensors read per candidate, reused across tensors
        self._mapped = MappedFiles()  # the file tier: mapped once, read per candidate
        self._orders: dict[tuple[str, str, type], SourceNorm] = {}  # source-only tables, built on first use
        self.order_bytes = 0
        self._budget = budget
        base_ckpt = self.checkpoints.get(self.base_model) if self.base_model else None
        base_names = set(base_ckpt.names) if base_ckpt is not None else set()
        if base_ckpt is not None:
            for name in base_ckpt.names:
                if name in self._layouts:
                    continue
                tier = self.tiers[(self.base_model, name)]
                if tier != FILES:
                    self._base[name] = self._keep(self._load(base_ckpt, name).to(storage_dtype), tier)
        for key, ckpt in self.checkpoints.items():
            if key == self.base_model:
                continue
            store: dict[str, torch.Tensor] = {}
            for name in ckpt.names:
                if name in self._layouts:
                    continue
                tier = self.tiers[(key, name)]
                if tier == FILES:
                    continue
                tensor = self._load(ckpt, name)
                if name in base_names:
                    tensor = tensor - self._base_f32(name)
                store[name] = self._keep(tensor.to(storage_dtype), tier)
            self._tensors[key] = store
        for name, layout in self._layouts.items():
            self._load_vocabulary_tensor(name, layout)
        self._device_used = [0] * len(self.devices)  # bytes held per device (split workers budget orders by it)
        for key, store in ((self.base_model, self._base), *self._tensors.items()):
            for name, held in store.items():
                if self.tiers.get((key, name), DEVICE) == DEVICE:
                    self._device_used[self.placement.get(name, 0)] += held.numel() * held.element_size()

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """The worker's devices: several for a split worker, else just ``device``."""
        return self._devices or (self.device,)

    def device_of(self, name: str) -> torch.device:
        """Where checkpoint tensor ``name``'s inputs live and its merge runs: its parameter's device."""
        return self._devices[self.placement.get(name, 0)] if self._devices else self.device

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
        raw = {m: self._load(self.checkpoints[m], name) for m in layout.models}
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

    def _keep(self, tensor: torch.Tensor, tier: str) -> torch.Tensor:
        """Hold ``tensor`` in its tier: as is on the device, or pinned in host memory."""
        if tier != "device":
            tensor = tensor.to("cpu").pin_memory()
        self.nbytes += tensor.numel() * tensor.element_size()
        return tensor

    def _base_f32(self, name: str, pooled: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The base tensor at the storage dtype, widened, on the device: held, or read from its file."""
        held = self._base.get(name)
        if held is None:
            assert self.base_model is not None
            return _round_to(self._read(self.base_model, name, pooled), self.storage_dtype)
        return held.to(self.device_of(name), non_blocking=True).float()

    def _read(self, key: str, name: str, pooled: list[torch.Tensor] | None) -> torch.Tensor:
        """A source tensor from its memory-mapped file, in a float32 buffer on the device (the file tier, per
        candidate). Buffers taken from the pool are listed in ``pooled``.
        """
        tensor = self._mapped.view(self.checkpoints[key], name)  # read-only: copied below, never written
        device = self.device_of(name)
        if pooled is None or device.type != "cpu":
            tensor = tensor.to(device, torch.float32, copy=True)
        else:
            tensor = self._pool.widen(tensor)
            pooled.append(tensor)
        return tensor

    def _delta(self, key: str, name: str, base: torch.Tensor | None,
               pooled: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Task vector (or, without a base, the source) in float32 on the device, from whichever tier holds it."""
        held = self._tensors.get(key, {}).get(name)
        if held is not None:
            return held.to(self.device_of(name), non_blocking=True).float()
        tensor = self._read(key, name, pooled)
        if base is not None:
            tensor.sub_(base)
        # rounded to the storage dtype as the held task vectors are: every tier gives the same values
        return _round_to(tensor, self.storage_dtype)

    def orders(self, task: TensorTask, deltas: list[torch.Tensor]) -> list[SourceNorm | None] | None:
        """Each task vector's source-only table for the task's sparsifier (``SOURCE_TABLES``), built once, kept.

        Only for task vectors held on the device, and only while the sources' ``budget`` has room for
        them (magnitude orders: one byte per entry, DELLA's row ranks: two): a new density per candidate
        then costs comparison passes instead of a selection (or a sort) over the float32 magnitudes.
        """
        kind = SOURCE_TABLES.get(task.method)
        if kind is None or task.base is None:
            return None
        out: list[SourceNorm | None] = []
        missing: list[tuple[int, tuple[str, str, type], torch.Tensor]] = []
        planned: dict[int, int] = {}  # bytes of the tables about to be built, per device
        for ref, delta in zip(task.sources, deltas, strict=True):
            key = (ref.model, ref.name, kind)
            out.append(self._orders.get(key))
            if out[-1] is not None or self.tiers.get(key[:2]) != "device" or ref.model == self.base_model:
                continue
            need = kind.planned_nbytes(tuple(delta.shape))
            device = self.placement.get(ref.name, 0)
            if self._room_for_table(device, planned.get(device, 0) + need):
                missing.append((len(out) - 1, key, delta))  # else no room: the plain selection, same result
                planned[device] = planned.get(device, 0) + need
        for (i, key, _), table in zip(missing, _build_tables(kind, [delta for _, _, delta in missing]), strict=True):
            out[i] = self._orders[key] = table
            self.order_bytes += table.nbytes
            self._device_used[self.placement.get(key[1], 0)] += table.nbytes
        return out

    def _room_for_table(self, device: int, need: int) -> bool:
        """Whether the budget (that of device ``device``, on a split worker) has room for ``need`` more table bytes."""
        if self._device_budgets is not None:
            cap = self._device_budgets[device]
            return cap is None or self._device_used[device] + need <= cap
        return self._budget is None or self.nbytes + self.order_bytes + need <= self._budget

    def give_back(self, pooled: list[torch.Tensor]) -> None:
        """Return the buffers a finished task read into (``pooled`` from ``gather``) for the next tensors."""
        self._pool.give_back(pooled)

    @classmethod
    def from_paths(cls, paths: list[str | Path], base_model: str | Path | None, **kwargs) -> ResidentSources:
        keys = {model_key(p): p for p in paths}
        if base_model is not None:
            keys.setdefault(model_key(base_model), base_model)
        return cls({k: Checkpoint.open(p) for k, p in keys.items()},
                   str(base_model) if base_model is not None else None, **kwargs)

    def _load(self, ckpt: Checkpoint, name: str) -> torch.Tensor:
        tensor = ckpt.get(name, device=self.device_of(name))
        if not all_finite(tensor):
            check_finite(tensor, name=name, path=ckpt.info(name).file)  # raises, naming tensor and file
        return tensor.float()

    @property
    def models(self) -> list[str]:
        return list(self.checkpoints)

    def gather(self, task: TensorTask, pooled: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """A task's inputs in float32 on the device, in the form ``run_task`` takes.

        With ``pooled``, tensors read from the files go into reused buffers, listed there for ``give_back``.
        """
        self._check_layout(task)
        if task.base is None:
            if self.base_model is not None:
                # Resident as task vectors, but this task wants raw sources.
                return None, [self._source(ref) for ref in task.sources]
            return None, [self._delta(ref.model, ref.name, None, pooled) for ref in task.sources]
        if task.base.model != self.base_model:
            raise MergeError(f"tensor '{task.out_name}': recipe base {task.base.model} is not the resident base "
                             f"{self.base_model}")
        base = self._base_f32(task.base.name, pooled)
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
            deltas.append(self._delta(ref.model, ref.name, base, pooled))
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

    def gather_ready(self, task: TensorTask) -> tuple[torch.Tensor | None, list[torch.Tensor], list[torch.Tensor]]:
        """``gather`` for a background thread, plus its pooled buffers; on CUDA its copies run on a side stream,
        finished on return.
        """
        pooled: list[torch.Tensor] = []
        device = self.device_of(task.sources[0].name) if task.sources else self.device
        if device.type != "cuda":
            return (*self.gather(task, pooled), pooled)
        stream = self._copy_streams.get(device)
        if stream is None:  # one side stream per device of a split worker
            stream = self._copy_streams[device] = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            base, inputs = self.gather(task, pooled)
        stream.synchronize()
        return base, inputs, pooled

    def _source(self, ref: TensorRef) -> torch.Tensor:
        base = self._base_f32(ref.name)
        if ref.model == self.base_model:
            return base
        return base + self._delta(ref.model, ref.name, base)

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

    def _land(task: TensorTask, base: torch.Tensor | None, inputs: list[torch.Tensor]) -> None:
        merged = run_task(task, base, inputs, resident.orders(task, inputs))
        if merged.dtype != out_dtype:
            merged = merged.to(out_dtype)  # what the streaming merge writes to disk
        landing.write(task.out_name, merged)

    with torch.no_grad():
        if not resident.streamed:
            for task in plan.tasks:
                base, inputs = resident.gather(task)
                _land(task, base, inputs)
        else:
            # Some inputs come from host memory or the files: fetch the next tensor's while this one merges
            # (reads and copies release the GIL); at most two tasks' inputs are alive at once.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evomerge-fetch") as fetcher:
                pending = fetcher.submit(resident.gather_ready, plan.tasks[0]) if plan.tasks else None
                for i, task in enumerate(plan.tasks):
                    assert pending is not None
                    base, inputs, pooled = pending.result()
                    if i + 1 < len(plan.tasks):
                        pending = fetcher.submit(resident.gather_ready, plan.tasks[i + 1])
                    for t in (*([base] if base is not None else []), *inputs):
                        if t.is_cuda:  # made on the side stream, used on this one
                            t.record_stream(torch.cuda.current_stream(t.device))
                    _land(task, base, inputs)
                    del base, inputs
                    resident.give_back(pooled)  # written: nothing reads these buffers any more
        landing.finish()
    return plan


def _build_tables(kind: type[SourceNorm], deltas: list[torch.Tensor]) -> list[SourceNorm]:
    """``kind(delta)`` for each task vector; for large CPU tensors one per thread (a bucketing or a row sort per
    source, the GIL released), as the sparsifiers run: a first candidate builds every source's table at once."""
    if len(deltas) < 2 or deltas[0].device.type != "cpu" or deltas[0].numel() < 1 << 20:
        return [kind(delta) for delta in deltas]
    with ThreadPoolExecutor(max_workers=min(len(deltas), os.cpu_count() or 1)) as pool:
        return list(pool.map(kind, deltas))


def _round_to(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` (float32) rounded to ``dtype``'s precision, in place: as a task vector held at ``dtype`` is."""
    return tensor if dtype == torch.float32 else tensor.copy_(tensor.to(dtype))

