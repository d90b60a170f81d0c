"""Source weights read once per machine and shared read-only by its workers, plus the size check before loading.

A CPU worker that loaded every source itself would hold base + task vectors
privately, and N workers on a machine N copies of them. Instead one Ray task
reads the sources once (base and task vectors exactly as ``ResidentSources``
computes them), returns them as numpy arrays, which Ray keeps in the node's
shared-memory object store, and every actor maps them zero-copy (numpy views
of that shared memory, wrapped by ``torch.from_numpy``): one copy per node,
whatever the number of workers; only the model instance is private. GPU
workers copy them to their device instead. bfloat16 travels as its uint16 bits
(numpy has no bfloat16).

Sizes are known from checkpoint headers alone, so a worker checks that its
sources fit its device *before* reading a byte (``check_fits``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.errors import CheckpointError, ConfigError
from evomerge.exec.memory_plan import host_available_bytes, source_paths  # source_paths: re-exported
from evomerge.exec.memory_plan import proc_kib as _proc_kib
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.mapped import MappedFiles
from evomerge.materialize.execute import BufferPool
from evomerge.materialize.inplace import ResidentSources
from evomerge.recipe.tokenizer import TokenizerSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GIB = 2**30


def _gib(n: float) -> str:
    """A byte count in the largest unit that keeps it >= 1 (3 significant digits)."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class ResidentSizes:
    """Bytes each source takes resident (at the storage dtype) and the model instance (at the model dtype)."""

    per_source: dict[str, int]  # by path, in load order (the base first)
    model: int
    storage_dtype: str
    model_dtype: str = "float32"

    @property
    def sources_total(self) -> int:
        return sum(self.per_source.values())


def resident_sizes(base: str | None, models: Sequence[str], storage_dtype: str = "float32",
                   model_dtype: str = "auto") -> ResidentSizes:
    """What loading the sources will need, from the checkpoint headers (no tensor is read).

    ``model_dtype`` as ``runner.model_dtype`` (``auto``: the template checkpoint's dtype).
    """
    from evomerge.models import resolve_model_dtype

    element = DTYPES[storage_dtype].itemsize
    per_source: dict[str, int] = {}
    template_numel = 0
    template = str(base) if base is not None else str(models[0])
    paths = list(source_paths(base, models).values())
    if base is not None:  # ResidentSources loads the base first
        paths.sort(key=lambda p: p != str(base))
    for path in paths:
        ckpt = Checkpoint.open(path)
        numel = sum(math.prod(ckpt.info(n).shape) for n in ckpt.names)
        per_source[path] = numel * element
        if path == template:
            template_numel = numel
    instance = resolve_model_dtype(model_dtype, template)
    return ResidentSizes(per_source, template_numel * instance.itemsize, storage_dtype,
                         str(instance).removeprefix("torch."))


def check_fits(sizes: ResidentSizes, available: int, device: str, *, sources_resident: bool = True) -> None:
    """Raise CheckpointError naming the first source that does not fit in ``available`` bytes on ``device``.

    ``sources_resident=False`` when the sources live elsewhere (the node's
    shared object store): then only the model instance must fit.
    """
    need = sizes.model
    if need > available:
        raise CheckpointError(
            f"the model instance ({_gib(sizes.model)} in {sizes.model_dtype}) does not fit on {device}: "
            f"{_gib(available)} available; use runner.model_dtype: bfloat16 or a device with more memory"
        )
    if not sources_resident:
        return
    for path, nbytes in sizes.per_source.items():
        need += nbytes
        if need > available:
            raise CheckpointError(
                f"source {path} does not fit on {device}: it needs {_gib(nbytes)} resident ({sizes.storage_dtype}); "
                f"with the sources before it and the model instance the worker needs {_gib(need)} "
                f"(all sources: {_gib(sizes.sources_total)} + model {_gib(sizes.model)}), but {device} has "
                f"{_gib(available)} available. Use runner.storage_dtype: bfloat16, fewer or smaller sources, "
                "or a device with more memory."
            )


def device_available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free bytes, or the machine's available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()


# ---- packing for the object store --------------------------------------------------------------------------------

def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy()
    return t.numpy()


def _from_numpy(a: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # the object store's arrays are read-only; so are our uses of them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(a)
    if dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t if device.type == "cpu" else t.to(device)


def pack(resident: ResidentSources) -> dict[str, Any]:
    """Plain data (numpy arrays) that ``unpack`` turns back into the same ResidentSources.

    Sources merged across vocabularies travel with their tokenizer settings and the merged vocabulary's
    fingerprint: the vocabulary tensors are already laid out in it, and ``unpack`` rebuilds the vocabulary
    itself (tokenizer, row maps) from the tokenizer files, refusing one that came out otherwise.
    """
    vocabulary = resident.vocabulary
    return {
        "base_model": resident.base_model,
        "storage_dtype": str(resident.storage_dtype).removeprefix("torch."),
        "base": {n: _to_numpy(t) for n, t in resident._base.items()},
        "tensors": {m: {n: _to_numpy(t) for n, t in store.items()} for m, store in resident._tensors.items()},
        "nbytes": resident.nbytes,
        "tokenizer": vocabulary.spec.model_dump_json() if vocabulary is not None else None,
        "vocabulary": vocabulary.fingerprint if vocabulary is not None else None,
    }


def load_packed(base: str | None, models: Sequence[str], storage_dtype: str = "float32",
                tokenizer: TokenizerSpec | None = None) -> dict[str, Any]:
    """Read the sources once (on the CPU) and pack them; run as a Ray task whose result the actors share.

    ``tokenizer``: the sources' tokenizer settings when their vocabularies differ (``sources.tokenizer``).
    """
    resident = ResidentSources.from_paths(list(models), base, device="cpu", storage_dtype=DTYPES[storage_dtype],
                                          tokenizer=tokenizer)
    return pack(resident)


def unpack(state: Mapping[str, Any], paths: Mapping[str, str], device: str | torch.device = "cpu") -> ResidentSources:
    """A ResidentSources over the packed arrays: zero-copy views on the CPU, copies on a GPU.

    Built without re-reading any tensor: only the checkpoint headers are opened
    (the merge plan needs names and shapes), and, for sources merged across
    vocabularies, the tokenizer files.
    """
    device = torch.device(device)
    dtype = DTYPES[state["storage_dtype"]]
    resident = ResidentSources.__new__(ResidentSources)
    resident.device = device
    resident.storage_dtype = dtype
    resident.base_model = state["base_model"]
    resident.checkpoints = {key: Checkpoint.open(Path(p)) for key, p in paths.items()}
    if state.get("tokenizer") is not None:
        _unpack_vocabulary(resident, state)
    resident._base = {n: _from_numpy(a, dtype, device) for n, a in state["base"].items()}
    resident._tensors = {m: {n: _from_numpy(a, dtype, device) for n, a in store.items()}
                         for m, store in state["tensors"].items()}
    resident.nbytes = int(state["nbytes"])
    # vocabulary tensors have no tier, as in ResidentSources itself (no magnitude order is kept for them)
    resident.tiers = {(key, n): "device" for key in resident.checkpoints for n in resident.checkpoints[key].names
                      if n not in resident._layouts}
    resident.streamed = False
    resident._copy_streams = {}
    resident._device_used = [resident.nbytes]
    resident._pool = BufferPool()
    resident._mapped = MappedFiles()
    resident._orders = {}
    resident.order_bytes = 0
    resident._budget = None
    return resident


def _unpack_vocabulary(resident: ResidentSources, state: Mapping[str, Any]) -> None:
    """The merged vocabulary and row layouts of packed sources, rebuilt here from tokenizer files and headers."""
    spec = TokenizerSpec.model_validate_json(state["tokenizer"])
    resident.vocabulary, resident._layouts = resident._vocabulary_layouts(spec)
    if resident.vocabulary.fingerprint != state["vocabulary"]:
        folders = ", ".join(sorted(str(c.path) for c in resident.checkpoints.values()))
        raise ConfigError(f"the merged vocabulary built here from the tokenizer files of {folders} differs from the "
                          "one the shared sources were laid out in: the tokenizer files differ between this "
                          "node and the node that read the sources")


def process_memory(pid: int | None = None) -> dict[str, int]:
    """rss, uss and pss of a process in bytes (uss: private pages; pss: private + a fair share of shared ones)."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: the kernel's own rollup
        path = f"/proc/{pid or 'self'}/smaps_rollup"
        return {"rss": _proc_kib(path, ("Rss",)) * 1024, "pss": _proc_kib(path, ("Pss",)) * 1024,
                "uss": _proc_kib(path, ("Private_Clean", "Private_Dirty")) * 1024}
    info = psutil.Process(pid).memory_full_info()
    return {"rss": int(info.rss), "uss": int(getattr(info, "uss", 0)), "pss": int(getattr(info, "pss", 0))}
