"""The evaluation worker: sources resident once, one model instance, candidates merged in place.

Both runners use it: the local runner holds one in-process, the Ray runner one
per actor. Per candidate it writes the recipe's weights into its model (the
in-place materializer; no disk I/O, no model construction), or, for a
data-flow recipe, routes through the resident source layers, then runs every
fitness task. Any exception becomes a failed EvalResult with its traceback.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.errors import ConfigError, MergeError
from evomerge.exec.base import Candidate, EvalResult
from evomerge.exec.device_split import DeviceSplit, plan_split, tensor_slots
from evomerge.fitness import FitnessTask, check_tokenizer, evaluate_all
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.load_map import load_map_for
from evomerge.materialize.plan import model_key
from evomerge.models import load_model, resolve_model_dtype
from evomerge.recipe.tokenizer import TokenizerSpec
from evomerge.vocab.rows import is_vocabulary_tensor


class EvalWorker:
    """Holds ``sources`` (base + task vectors) and one model on ``device``; scores candidates."""

    def __init__(self, base: str | None, models: Sequence[str], tasks: Sequence[FitnessTask], *,
                 device: str = "cpu", storage_dtype: torch.dtype = torch.float32, name: str = "local",
                 threads: int | None = None, resident: ResidentSources | None = None,
                 tokenizer: TokenizerSpec | None = None, model_dtype: str | torch.dtype = "auto",
                 source_memory: int | str | None = "auto", host_memory: int | str | None = "auto",
                 devices: Sequence[str] | None = None, device_memory: Sequence[int] | None = None) -> None:
        """``resident``: sources already held elsewhere (e.g. shared by a Ray node's workers); else read here.

        ``tokenizer``: mergekit's tokenizer settings, for sources with different vocabularies; the model
        instance then has the merged vocabulary and the merged tokenizer scores it.
        ``model_dtype``: the model instance's dtype (``auto``: the template checkpoint's), so that the
        weights scored are those a merge to that dtype writes (merged in float32, cast once).
        ``source_memory``: bytes the sources may hold on the device (``auto``: what is free once the model
        is loaded, less a reserve for activations; None: no limit); beyond it ``host_memory`` bytes of pinned
        host memory (CUDA; ``auto``: what the machine has free, less 2 GiB), then the memory-mapped files.
        ``devices``: several devices (``runner.gpus_per_worker: k`` gives cuda:0..k-1) over which the model's
        layers are split, each source tensor kept and merged on its parameter's device; ``source_memory`` is
        then per device, and ``device_memory`` the bytes of each device the model and its sources may use
        (default: what is free on it, less the reserve for activations).
        """
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self.device = torch.device(device)
        self.tasks = list(tasks)
        self.base = base
        self.models = list(models)
        template = base or models[0]
        self.model_dtype = resolve_model_dtype(model_dtype, template)
        self.split: DeviceSplit | None = None
        if devices is not None and len(devices) > 1:
            if resident is not None or tokenizer is not None:
                raise ConfigError("a worker split over several devices reads its own sources, in one vocabulary "
                                  "(no shared sources, no sources.tokenizer yet)")
            self.split, self.model, self.tokenizer, resident = _split_worker(
                template, base, list(models), devices, device_memory, storage_dtype, self.model_dtype,
                source_memory, host_memory)
            self.device = self.split.devices[0]
        else:
            self.model, self.tokenizer = load_model(Path(template), device=device, dtype=self.model_dtype)
        if resident is None:  # after the model: what the device has free is measured with it in place
            budget, host_budget = source_budgets(self.device, source_memory, host_memory)
            resident = ResidentSources.from_paths(list(models), base, device=device, storage_dtype=storage_dtype,
                                                  budget=budget, host_budget=host_budget, tokenizer=tokenizer)
        self.resident = resident
        vocabulary = self.resident.vocabulary
        if vocabulary is not None:  # every row is written by each candidate's merge
            self.model.resize_token_embeddings(vocabulary.rows, mean_resizing=False)
            self.tokenizer = copy.deepcopy(vocabulary.tokenizer)  # fitness tasks may set padding on theirs
        check_tokenizer(self.tasks, self.tokenizer, str(template))  # before the first candidate, not in each
        # Map (and verify) once, before the search, where from_pretrained lands each checkpoint tensor
        # (vocabulary tensors with the merged vocabulary's rows).
        ckpt = self.resident.checkpoints[model_key(template)]
        layout = []
        for name in ckpt.names:
            shape = tuple(ckpt.info(name).shape)
            if vocabulary is not None and shape and is_vocabulary_tensor(name, ckpt):
                shape = (vocabulary.rows, *shape[1:])
            layout.append((name, shape))
        load_map_for(self.model, layout)
        self._routed_cache: dict[str, Any] = {}

    def _model_for(self, candidate: Candidate) -> Any:
        recipe = candidate.recipe
        if recipe.layer_path:
            from evomerge.materialize.dataflow import routed_model_for

            if self.split is not None:
                raise MergeError("data-flow recipes (layer_path) run on one device per worker; this worker is "
                                 f"split over {len(self.split.devices)} (runner.gpus_per_worker or runner.devices)")

            return routed_model_for(recipe, self)
        materialize_into(self.model, recipe, self.resident)
        return self.model

    def evaluate(self, candidate: Candidate) -> EvalResult:
        t0 = time.perf_counter()
        try:
            model = self._model_for(candidate)
            t1 = time.perf_counter()
            if candidate.race is not None:
                from evomerge.racing.staged import evaluate_staged

                with torch.inference_mode():
                    staged = evaluate_staged(self.tasks, model, self.tokenizer, candidate.split,
                                             candidate.race.for_key(candidate.key))  # hyperband: its bracket
                return EvalResult(key=candidate.key, status=staged.status,  # type: ignore[arg-type]
                                  objectives=staged.objectives, per_example=staged.per_example,
                                  racing=staged.racing, merge_seconds=t1 - t0,
                                  fitness_seconds=time.perf_counter() - t1, worker=self.name)
            with torch.inference_mode():
                results = evaluate_all(self.tasks, model, self.tokenizer, split=candidate.split)
            t2 = time.perf_counter()
        except Exception:
            return EvalResult(key=candidate.key, status="failed", error=traceback.format_exc(), worker=self.name,
                              merge_seconds=time.perf_counter() - t0)
        objectives: dict[str, float] = {}
        per_example: dict[str, np.ndarray] = {}
        for task in self.tasks:
            res = results[task.name]
            objectives.update(res.objectives)
            per_example[task.name] = np.asarray(res.per_example, dtype=np.float64)  # pickles as one buffer
        bad = {k: v for k, v in objectives.items() if not math.isfinite(v)}
        if bad:
            return EvalResult(key=candidate.key, status="failed", error=f"non-finite objective(s): {bad}",
                              objectives=objectives, worker=self.name, merge_seconds=t1 - t0, fitness_seconds=t2 - t1)
        return EvalResult(key=candidate.key, status="ok", objectives=objectives, per_example=per_example,
                          merge_seconds=t1 - t0, fitness_seconds=t2 - t1, worker=self.name)


def source_budgets(device: torch.device, source_memory: int | str | None,
                   host_memory: int | str | None) -> tuple[int | None, int]:
    """(device bytes, pinned host bytes) the resident sources may take; ``auto`` measures what is free now."""
    from evomerge.exec.memory_plan import parse_bytes
    from evomerge.exec.shared_sources import device_available_bytes

    def size(value: int | str | None, key: str, auto: Callable[[], int]) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return auto() if value == "auto" else parse_bytes(value, what=f"runner.{key}")

    def free_device() -> int:  # after the model is loaded; a reserve for activations (10% on a GPU, 5% of RAM)
        free = device_available_bytes(device)
        total = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else free
        return max(0, free - max(2**30, total // (10 if device.type == "cuda" else 20)))

    budget = size(source_memory, "source_memory", free_device)
    host = 0
    if device.type == "cuda":
        host = size(host_memory, "host_memory",
                    lambda: max(0, device_available_bytes(torch.device("cpu")) - 2 * 2**30)) or 0
    return budget, host


def _split_worker(template: str, base: str | None, models: list[str], devices: Sequence[str],
                  device_memory: Sequence[int] | None, storage_dtype: torch.dtype, model_dtype: torch.dtype,
                  source_memory: int | str | None, host_memory: int | str | None
                  ) -> tuple[DeviceSplit, torch.nn.Module, Any, ResidentSources]:
    """The model split over ``devices`` by accelerate's device map, and the sources read beside its parameters.

    Before anything is loaded the layers are split over what each device may hold (the model and the sources
    resident beside it); after the load, every landing parameter is checked to be on its planned device.
    """
    from evomerge.exec.shared_sources import source_paths

    targets = [torch.device(d) for d in devices]
    cuda = [d for d in targets if d.type == "cuda"]
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda and max((d.index or 0) for d in cuda) >= have:
        raise ConfigError(f"a worker split over {', '.join(map(str, targets))} needs {len(cuda)} CUDA devices; "
                          f"this machine has {have} (runner.gpus_per_worker or runner.devices)")
    if device_memory is None:
        device_memory = [split_capacity(d, len(targets)) for d in targets]
    sources = len(source_paths(base, models))
    split = plan_split(template, targets, list(device_memory), model_dtype=model_dtype,
                       resident_bytes_per_element=sources * storage_dtype.itemsize)
    model, tokenizer = load_model(Path(template), dtype=model_dtype, device_map=split.device_map())
    ckpt_layout = _template_layout(template)
    landing = load_map_for(model, ckpt_layout)
    for name in landing.checkpoint_names():
        for param, tensor in landing.targets(name).items():
            want = split.devices[split.index_of(param)]
            if not _same_device(tensor.device, want):
                raise ConfigError(f"parameter {param} was loaded on {tensor.device}, not on {want} as the device "
                                  "map says")
    budgets: list[int | None] = []
    host = 0
    for target in targets:
        budget, host = source_budgets(target, source_memory, host_memory)
        if budget is not None and target.type == "cpu" and source_memory == "auto":
            budget //= len(targets)  # the same RAM, measured once per "cpu" device
        budgets.append(budget)
    resident = ResidentSources.from_paths(models, base, devices=targets, placement=tensor_slots(split, landing),
                                          storage_dtype=storage_dtype, budget=budgets, host_budget=host)
    return split, model, tokenizer, resident


def _template_layout(template: str) -> list[tuple[str, tuple[int, ...]]]:
    from evomerge.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(template)
    try:
        return [(name, tuple(ckpt.info(name).shape)) for name in ckpt.names]
    finally:
        ckpt.close()


def split_capacity(device: torch.device, count: int) -> int:
    """Bytes a device may give a split worker's model and sources: what is free, less the reserve for activations."""
    from evomerge.exec.shared_sources import device_available_bytes

    free = device_available_bytes(device)
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
        return max(0, free - max(2**30, total // 10))
    share = free // count  # "cpu" devices (the tests' stand-in for GPUs) share one RAM
    return max(0, share - max(2**30, share // 20))


def _same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 (the current device) are one device; cpu is cpu whatever its index."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
