"""What one Ray actor runs: an EvalWorker over resident sources, or a function target.

Kept free of Ray decorators so it can be read and tested as a plain class; the
runner wraps it with ``ray.remote``. Errors we raise on purpose while starting
(a source that does not fit, a GPU that is not there) are kept and reported by
``info()`` instead of killing the actor, so the driver re-raises them with
their own type and message rather than as a Ray creation traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evomerge.errors import ConfigError, EvomergeError
from evomerge.exec.base import Candidate, EvalResult


@dataclass
class WorkerSpec:
    """Everything an actor needs to build its worker (sent once, at creation and at every restart)."""

    base: str | None = None
    models: Sequence[str] = ()
    tasks: Sequence[Any] = ()
    target: str | Callable | None = None
    storage_dtype: str = "float32"
    model_dtype: str = "auto"
    gpus: float = 0.0
    threads: int = 1
    memory_budget_bytes: int | None = None  # cap on what the size check may assume is free
    tokenizer: Any = None  # TokenizerSpec for sources with different vocabularies (held in the merged one)
    devices: Sequence[str] | None = None  # as the actor numbers them; several: its model split over them
    source_memory: str | None = "auto"  # runner.source_memory / host_memory, per actor (per device when split)
    host_memory: str | None = "auto"


class EvalActor:
    """One evaluation slot.

    ``spec``: a WorkerSpec or ``[ObjectRef]`` of one (the runner holds it, so a
    restart finds it); ``shared``: ``[ObjectRef]`` of packed sources in the
    node's object store, or None.
    """

    def __init__(self, spec: WorkerSpec | list, name: str, shared: list | None = None) -> None:
        import ray

        if isinstance(spec, list):
            spec = ray.get(spec[0])
        self.name = name
        self.error: tuple[str, str] | None = None
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        # Ray sets CUDA_VISIBLE_DEVICES: cuda (cuda:0..k-1) is ours
        self.device = spec.devices[0] if spec.devices else ("cuda" if spec.gpus > 0 else "cpu")
        self.resident_bytes = 0
        self.split: list[list[str]] | None = None  # a split worker's modules per device
        self.shared = False
        self._function: Callable[[Candidate], EvalResult] | None = None
        self._worker: Any = None
        try:
            self._build(spec, shared)
        except EvomergeError as exc:
            self.error = (type(exc).__name__, str(exc))

    def _build(self, spec: WorkerSpec, shared: list | None) -> None:
        if spec.target is not None:  # no torch import: a function actor starts (and restarts) in a fraction
            from evomerge.exec.function import FunctionRunner

            runner = FunctionRunner(spec.target)
            self._function = lambda c: next(iter(runner.evaluate([c])))
            return
        import ray
        import torch

        from evomerge.exec.shared_sources import (
            DTYPES,
            check_fits,
            device_available_bytes,
            resident_sizes,
            source_paths,
            unpack,
        )
        from evomerge.exec.worker import EvalWorker

        torch.set_num_threads(max(1, spec.threads))
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"worker {self.name} was given a GPU by Ray but torch sees no CUDA device "
                              f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); install a CUDA build of torch")
        if spec.devices is not None and len(spec.devices) > 1:
            self._build_split(spec, list(spec.devices))
            return
        sizes = resident_sizes(spec.base, list(spec.models), spec.storage_dtype, spec.model_dtype)
        available = device_available_bytes(device)
        if spec.memory_budget_bytes is not None:
            available = min(available, spec.memory_budget_bytes)
        views = shared is not None and device.type == "cpu"
        # only the model instance must fit: sources beyond the budget go to pinned host memory / the files
        check_fits(sizes, available, self.device, sources_resident=False)
        source_memory: int | str | None = spec.source_memory
        if spec.memory_budget_bytes is not None:
            source_memory = max(0, available - sizes.model)
        resident = None
        if shared is not None:
            try:
                state = ray.get(shared[0])
            except ray.exceptions.RayTaskError as exc:  # reading the sources failed: report that error itself
                if isinstance(exc.cause, EvomergeError):
                    raise exc.cause from None
                raise
            resident = unpack(state, source_paths(spec.base, list(spec.models)), device)
            self.shared = views
        self._worker = EvalWorker(spec.base, list(spec.models), list(spec.tasks), device=self.device,
                                  storage_dtype=DTYPES[spec.storage_dtype], name=self.name, threads=spec.threads,
                                  resident=resident, model_dtype=spec.model_dtype, source_memory=source_memory,
                                  host_memory=spec.host_memory,
                                  tokenizer=spec.tokenizer)
        self.resident_bytes = int(self._worker.resident.nbytes)

    def _build_split(self, spec: WorkerSpec, devices: list[str]) -> None:
        """A worker split over this actor's devices: its own sources beside each layer; the split's own refusal
        (with the numbers) replaces the one-device size check."""
        import torch

        from evomerge.exec.shared_sources import DTYPES
        from evomerge.exec.worker import EvalWorker, split_capacity

        torch.set_num_threads(max(1, spec.threads))
        device_memory = None
        if spec.memory_budget_bytes is not None:  # a cap per device on what it may give the model and sources
            device_memory = [min(split_capacity(torch.device(d), len(devices)), spec.memory_budget_bytes)
                             for d in devices]
        self._worker = EvalWorker(spec.base, list(spec.models), list(spec.tasks), devices=devices,
                                  storage_dtype=DTYPES[spec.storage_dtype], name=self.name, threads=spec.threads,
                                  model_dtype=spec.model_dtype, device_memory=device_memory,
                                  source_memory=spec.source_memory, host_memory=spec.host_memory,
                                  tokenizer=spec.tokenizer)
        assert self._worker.split is not None
        self.split = self._worker.split.per_device()
        self.resident_bytes = int(self._worker.resident.nbytes)

    def info(self) -> dict[str, Any]:
        """Who and where this worker is, how much memory it holds, and any error it met while starting."""
        from evomerge.exec.shared_sources import process_memory

        return {"name": self.name, "pid": os.getpid(), "node_id": self.node_id, "node_ip": self.node_ip,
                "device": self.device, "memory": process_memory(), "resident_bytes": self.resident_bytes,
                "shared_sources": self.shared, "split": self.split, "error": self.error}

    def evaluate(self, candidate: Candidate) -> EvalResult:
        if self.error is not None:
            return EvalResult(key=candidate.key, status="failed", worker=self.name,
                              error=f"worker {self.name} could not start: {self.error[0]}: {self.error[1]}")
        result = self._function(candidate) if self._function is not None else self._worker.evaluate(candidate)
        result.worker = self.name
        result.details.update({"node_id": self.node_id, "node_ip": self.node_ip, "pid": os.getpid()})
        return result

    def evaluate_many(self, candidates: Sequence[Candidate]) -> list[EvalResult]:
        """Several candidates in one call: for millisecond candidates, where a Ray call's ~1 ms would dominate."""
        return [self.evaluate(c) for c in candidates]
