"""Where a search's weights will live, worked out from checkpoint headers before a byte is loaded.

A worker holds one model instance and the sources (the base in full, the
others as task vectors). On a GPU worker they are placed tensor by tensor,
first fit, in three tiers: the device (after the model instance and a reserve
for activations and KV cache), host memory (pinned, copied to the device per
candidate), and beyond that the memory-mapped source files (read per
candidate). A CPU worker has two: resident in RAM, or read from the files.

``place`` is the placement itself; ``ResidentSources`` uses it with the same
budgets, so ``evomerge plan`` prints what a worker will do. Only headers are
read: a 70B plan runs on a laptop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evomerge.errors import ConfigError
from evomerge.io.dtype_table import ITEMSIZE, dtype_name, torch_dtype

DEVICE, HOST, FILES = "device", "host", "files"
TIER_LABEL = {DEVICE: "device", HOST: "pinned host", FILES: "memory-mapped files"}

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str, *, what: str = "size") -> int:
    """'80GiB' (binary), '80GB' (decimal), '1.5T' (binary), '1000' -> bytes; ConfigError naming ``what``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{what}: '{text}' is not a size like 80GiB, 80GB or 512G")
    return int(float(match.group(1)) * _UNITS[unit])


def human(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (3 significant digits)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"



def proc_kib(path: str, keys: tuple[str, ...]) -> int:
    """Sum of the ``key: N kB`` lines of a /proc file."""
    total = 0
    with open(path) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                total += int(rest.split()[0])
    return total


def host_available_bytes() -> int:
    """The machine's available RAM (psutil, else Linux's /proc/meminfo); no torch needed."""
    try:
        import psutil
    except ImportError:  # psutil is a dev dependency; Linux says the same in /proc
        return proc_kib("/proc/meminfo", ("MemAvailable",)) * 1024
    return int(psutil.virtual_memory().available)


def gpu_driver_present() -> bool:
    """Whether this machine can have a GPU for torch to measure: an NVIDIA (or ROCm, or WSL) device node.

    Checked before importing torch, so that `evomerge plan` on a machine without GPUs refuses in a fraction
    of a second instead of spending seconds importing torch to learn that there is none.
    """
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or (dev / "dxg").exists()


def measured_device_memory(where: str) -> int:
    """The total memory of this machine's first GPU as torch sees it (CUDA_VISIBLE_DEVICES, MIG slices);
    ConfigError naming ``where`` when there is none. Imports torch only when a GPU driver is present."""
    refusal = f"{where} puts workers on GPUs; give --device-memory (e.g. 80GiB), this machine has none to measure"
    if not gpu_driver_present():
        raise ConfigError(refusal)
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(refusal)
    return int(torch.cuda.mem_get_info()[1])


def source_paths(base: str | None, models: Sequence[str]) -> dict[str, str]:
    """Resident key → path, as ``ResidentSources.from_paths`` keys them (the base last unless it is a model)."""
    from evomerge.materialize.plan import model_key

    keys = {model_key(p): str(p) for p in models}
    if base is not None:
        keys.setdefault(model_key(base), str(base))
    return keys

@dataclass(frozen=True)
class Slot:
    """One source tensor as a worker keeps it: ``resident`` bytes at the storage dtype, ``file`` bytes on disk."""

    source: str  # the checkpoint's path
    name: str
    resident: int
    file: int
    device: int = 0  # a worker split over several devices: the index of the device of the tensor's parameter


def place(slots: Sequence[Slot], capacities: Sequence[tuple[str, int]],
          device_budgets: Sequence[int] | None = None) -> dict[tuple[str, str], str]:
    """First fit, in ``slots`` order: each tensor goes to the first tier with room left; the files take the rest.

    ``device_budgets``: a worker split over several devices, one device budget per device (a tensor fits the
    device tier only on its own device, ``Slot.device``); it replaces the DEVICE entry of ``capacities``.
    """
    left = {tier: cap for tier, cap in capacities}
    per_device = list(device_budgets) if device_budgets is not None else None

    def room(tier: str, slot: Slot) -> int:
        return per_device[slot.device] if tier == DEVICE and per_device is not None else left[tier]

    where: dict[tuple[str, str], str] = {}
    for slot in slots:
        tier = next((t for t, _ in capacities if room(t, slot) >= slot.resident), FILES)
        if tier == DEVICE and per_device is not None:
            per_device[slot.device] -= slot.resident
        elif tier != FILES:
            left[tier] -= slot.resident
        where[(slot.source, slot.name)] = tier
    return where


def source_slots(base: str | None, models: Sequence[str], storage_itemsize: int) -> list[Slot]:
    """Every source tensor, the base's first (every candidate needs it), from the headers alone."""
    from evomerge.io.checkpoint import Checkpoint

    paths = list(source_paths(base, models).values())
    if base is not None:
        paths.sort(key=lambda p: p != str(base))
    slots = []
    for path in paths:
        ckpt = Checkpoint.open(path)
        try:
            for name in ckpt.names:
                info = ckpt.info(name)
                slots.append(Slot(path, name, math.prod(info.shape) * storage_itemsize, info.nbytes))
        finally:
            ckpt.close()
    return slots


@dataclass
class DeviceShare:
    """One device of a worker split over several: its modules (accelerate's map), the model's and sources' bytes."""

    index: int
    modules: list[str]
    capacity: int
    reserve: int
    model_bytes: int = 0
    source_bytes: int = 0  # the device tier of the sources beside this device's layers

    @property
    def headroom(self) -> int:
        return self.capacity - self.model_bytes - self.source_bytes


@dataclass
class WorkerPlan:
    """One worker's memory: the model instance, each source's bytes per tier, headroom and traffic."""

    gpu: bool
    model_bytes: int
    model_dtype: str
    storage_dtype: str
    capacity: int  # the worker's device memory (GPU) or its share of the host memory (CPU)
    reserve: int  # kept free for activations / KV cache
    host_budget: int  # GPU workers: pinned host memory for sources
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> tier -> bytes
    file_reads: int = 0  # bytes read from the source files per candidate
    error: str | None = None
    tables: int = 0  # source-only tables of the held task vectors (TIES' magnitude orders: 1 byte per entry)
    devices: list[DeviceShare] = field(default_factory=list)  # a worker split over several GPUs: per GPU

    def tier_bytes(self, tier: str) -> int:
        return sum(t.get(tier, 0) for t in self.sources.values())

    @property
    def headroom(self) -> int:
        """What the device keeps free beside the model, the device-resident sources and their tables."""
        return self.capacity - self.model_bytes - self.tier_bytes(DEVICE) - self.tables

    @property
    def host_to_device(self) -> int:
        """Bytes copied to the device per candidate: the pinned tier and the file reads (GPU workers)."""
        return self.tier_bytes(HOST) + self.file_reads if self.gpu else 0


def plan_worker(slots: Sequence[Slot], *, model_bytes: int, model_dtype: str, storage_dtype: str, gpu: bool,
                capacity: int, reserve: int, host_budget: int, source_memory: int | None = None,
                base: str | None = None, table_bytes_per_entry: int = 0) -> WorkerPlan:
    """Place ``slots`` for one worker; ``error`` says, with the numbers, why nothing fits.

    ``table_bytes_per_entry``: what the method's source-only tables take per held task-vector entry (``base``'s
    tensors have none), counted as ``ResidentSources`` builds them: only while the sources' budget has room.
    """
    plan = WorkerPlan(gpu, model_bytes, model_dtype, storage_dtype, capacity, reserve, host_budget)
    free = capacity - reserve - model_bytes
    where_model = "the device" if gpu else "host memory"
    if free < 0:
        ways = ["runner.model_dtype: bfloat16"] if model_dtype == "float32" else []
        ways += ["fewer workers per " + ("GPU" if gpu else "machine"), "CPU workers" if gpu else "more machines",
                 "or more memory"]
        plan.error = (f"the model instance ({human(model_bytes)} in {model_dtype}) and the reserve for activations "
                      f"({human(reserve)}) need {human(model_bytes + reserve)}, but {where_model} has "
                      f"{human(capacity)} per worker; use {', '.join(ways)}")
        return plan
    if source_memory is not None:  # runner.source_memory caps what the sources may hold on the device
        free = min(free, source_memory)
    tiers = [(DEVICE, free)] + ([(HOST, max(0, host_budget))] if gpu else [])
    where = place(slots, tiers)
    _tally(plan, slots, where)
    if base is not None and table_bytes_per_entry:
        room = free - plan.tier_bytes(DEVICE) - plan.tier_bytes(HOST)
        itemsize = ITEMSIZE.get(storage_dtype, 4)
        for slot in slots:
            need = slot.resident // itemsize * table_bytes_per_entry
            if slot.source != base and where[(slot.source, slot.name)] == DEVICE and need <= room:
                plan.tables += need
                room -= need
    return plan


def _tally(plan: WorkerPlan, slots: Sequence[Slot], where: dict[tuple[str, str], str]) -> None:
    """Add each placed slot's bytes to its source's tier (and its device's share on a split worker)."""
    for slot in slots:
        tier = where[(slot.source, slot.name)]
        per = plan.sources.setdefault(slot.source, {})
        per[tier] = per.get(tier, 0) + (slot.file if tier == FILES else slot.resident)
        if tier == FILES:
            plan.file_reads += slot.file
        if tier == DEVICE and plan.devices:
            plan.devices[slot.device].source_bytes += slot.resident


def plan_split_worker(slots: Sequence[Slot], *, template: str, gpus: int, device_memory: int, reserve: int,
                      model_dtype, storage_dtype: str, host_budget: int, source_memory: int | None = None
                      ) -> WorkerPlan:
    """One worker split over ``gpus`` GPUs of ``device_memory`` bytes: the worker's own split (accelerate's device
    map over what each GPU holds less ``reserve``), the model's bytes per GPU, and the sources placed first fit on
    the GPU of their parameter (``source_memory``: a cap per GPU), then pinned host memory, then the files.
    """
    from evomerge.errors import MergeError
    from evomerge.exec.device_split import meta_model, plan_split, tensor_slots
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.materialize.load_map import LoadMap

    name = dtype_name(model_dtype)
    model_dtype = torch_dtype(name)  # the split builds a meta-device model: this path needs torch and accelerate
    itemsize = ITEMSIZE[storage_dtype]
    template_slots = [s for s in slots if s.source == template]
    model_bytes = sum(s.resident // itemsize for s in template_slots) * model_dtype.itemsize
    plan = WorkerPlan(True, model_bytes, name, storage_dtype, gpus * device_memory, gpus * reserve, host_budget)
    ckpt = Checkpoint.open(template)
    try:
        layout = [(n, tuple(ckpt.info(n).shape)) for n in ckpt.names]
    finally:
        ckpt.close()
    model = meta_model(template, model_dtype)
    try:
        landing = LoadMap(model, layout)
        split = plan_split(template, [f"cuda:{i}" for i in range(gpus)], [device_memory - reserve] * gpus,
                           model_dtype=model_dtype, model=model,
                           resident_bytes_per_element=len({s.source for s in slots}) * itemsize)
    except (ConfigError, MergeError) as exc:
        plan.error = str(exc)
        return plan
    index = tensor_slots(split, landing)
    plan.devices = [DeviceShare(i, modules, device_memory, reserve) for i, modules in enumerate(split.per_device())]
    for slot in template_slots:
        plan.devices[index.get(slot.name, 0)].model_bytes += slot.resident // itemsize * model_dtype.itemsize
    budgets = [max(0, d.capacity - d.reserve - d.model_bytes) for d in plan.devices]
    if source_memory is not None:
        budgets = [min(b, source_memory) for b in budgets]
    placed = [Slot(s.source, s.name, s.resident, s.file, index.get(s.name, 0)) for s in slots]
    _tally(plan, placed, place(placed, [(DEVICE, 0), (HOST, max(0, host_budget))], budgets))
    return plan


# bytes per held task-vector entry of the source-only tables each method builds (``inplace.SOURCE_TABLES``)
_TABLE_BYTES = {"ties": 1, "breadcrumbs": 1, "breadcrumbs_ties": 1, "della": 2, "della_linear": 2}


def table_bytes_per_entry(space: object) -> int:
    """Bytes per held task-vector entry of the tables the search space's merge method(s) build; TIES' one byte
    when the space cannot be read here (a plan reads no more than it must, and may over-count the tables)."""
    from evomerge.spaces.config import load_space, parse_space_config

    try:
        cfg = load_space(space) if isinstance(space, (str, Path)) else parse_space_config(space)
    except (ConfigError, OSError):  # a missing or invalid space is the run's error to report, not the plan's
        return 1
    methods = getattr(cfg, "method", None)
    if methods is None:
        return 0
    return max((_TABLE_BYTES.get(m, 0) for m in ([methods] if isinstance(methods, str) else methods)), default=0)


@dataclass
class MemoryPlan:
    """The whole search: the layout it assumes and the plan of one (every) worker."""

    workers: int
    machines: int
    gpus_per_worker: float
    device_memory: int | None
    host_memory: int
    worker: WorkerPlan
    base: str | None
    shared_on_host: bool  # CPU workers on Ray: one copy of the sources per machine
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.worker.error is None


def make_plan(config, *, device_memory: int | None = None, host_memory: int | None = None, machines: int = 1,
              reserve: int | None = None) -> MemoryPlan:
    """The memory plan of ``config`` (a RunConfig) on ``machines`` machines of ``host_memory`` bytes each,
    whose GPUs have ``device_memory`` bytes each. Reads checkpoint headers only.
    """
    from evomerge.model_dtype import model_dtype_name

    if config.sources is None:
        raise ConfigError(f"run config '{config.name}': no 'sources' to plan (a function or remote runner "
                          "holds no weights)")
    rc = config.runner
    base, models = config.sources.base, list(config.sources.models)
    workers = rc.workers if rc.type == "ray" else 1
    if machines < 1 or workers < machines:
        raise ConfigError(f"--machines {machines}: needs 1 <= machines <= workers ({workers})")
    per_machine = math.ceil(workers / machines)
    gpu = (rc.gpus() > 0) if rc.type == "ray" else rc.worker_device().startswith("cuda")
    notes: list[str] = []
    if host_memory is None:
        host_memory = host_available_bytes()
        notes.append(f"host memory: {human(host_memory)} available on this machine (give --host-memory to plan "
                     "for another)")
    gpus = rc.gpus() if rc.type == "ray" else max(1.0, rc.gpus())
    if gpu and device_memory is None:
        device_memory = measured_device_memory(f"run config '{config.name}'")
    template = str(base) if base is not None else str(models[0])
    model_dtype = model_dtype_name(str(rc.model_dtype), template)  # a name: the plan needs no torch
    storage_itemsize = ITEMSIZE[rc.storage_dtype]
    slots = source_slots(base, models, storage_itemsize)
    model_bytes = sum(s.resident // storage_itemsize for s in slots if s.source == template) * ITEMSIZE[model_dtype]
    # as the Ray runner decides: CPU workers share the sources unless split or capped by source_memory
    shared = not gpu and rc.type == "ray" and rc.worker_devices() is None and rc.source_memory in ("auto", None)
    if not gpu and rc.worker_devices():
        notes.append(f"runner.devices {rc.worker_devices()}: the split over CPU devices (the tests' stand-in for "
                     "GPUs) is planned as one CPU worker holding the model and its own sources")
    if gpu:
        assert device_memory is not None
        capacity = int(device_memory * min(gpus, 1.0))
        reserve_bytes = reserve if reserve is not None else max(2**30, capacity // 10)
        host_budget = (host_memory - per_machine * 2**30) // per_machine  # 1 GiB per process for itself
    else:
        # CPU workers: the model instances are private, the sources one copy per machine (Ray) or per worker
        reserve_bytes = reserve if reserve is not None else max(2**30, host_memory // 20)
        if shared:
            capacity = host_memory - (per_machine - 1) * (model_bytes + reserve_bytes)
        else:
            capacity = host_memory // per_machine
        host_budget = 0
    source_cap = None if rc.source_memory in (None, "auto") else parse_bytes(rc.source_memory)
    if rc.host_memory not in (None, "auto") and gpu:
        host_budget = parse_bytes(rc.host_memory)
    if gpu and gpus > 1:  # one worker split over several GPUs; the reserve is per GPU
        assert device_memory is not None
        worker = plan_split_worker(slots, template=template, gpus=int(gpus), device_memory=device_memory,
                                   reserve=reserve if reserve is not None else max(2**30, device_memory // 10),
                                   model_dtype=model_dtype, storage_dtype=rc.storage_dtype, host_budget=host_budget,
                                   source_memory=source_cap)
    else:
        worker = plan_worker(slots, model_bytes=model_bytes, model_dtype=model_dtype,
                             storage_dtype=rc.storage_dtype, gpu=gpu, capacity=capacity, reserve=reserve_bytes,
                             host_budget=host_budget, source_memory=source_cap,
                             base=str(base) if base is not None else None,
                             table_bytes_per_entry=table_bytes_per_entry(config.space))
    return MemoryPlan(workers, machines, gpus if gpu else 0.0, device_memory if gpu else None, host_memory, worker,
                      base, shared, notes)


def render(plan: MemoryPlan, sources: Sequence[str]) -> list[str]:
    """The plan as lines of text: per worker, each source's bytes per tier, the model, headroom, traffic."""
    w = plan.worker
    lines = []
    if w.gpu:
        assert plan.device_memory is not None
        lines.append(f"{plan.workers} worker(s) on {plan.machines} machine(s), {plan.gpus_per_worker:g} GPU each "
                     f"({human(plan.device_memory)} per GPU), host memory {human(plan.host_memory)} per machine")
    else:
        lines.append(f"{plan.workers} CPU worker(s) on {plan.machines} machine(s), host memory "
                     f"{human(plan.host_memory)} per machine"
                     + ("; sources shared by the workers of a machine" if plan.shared_on_host else ""))
    lines.extend(f"note: {n}" for n in plan.notes)
    home = "device" if w.gpu else "host"
    lines.append(f"per worker ({human(w.capacity)} {'on the device' if w.gpu else 'of host memory'}):")
    lines.append(f"  model instance ({w.model_dtype}): {human(w.model_bytes)} on the {home}"
                 + (f", split over {len(w.devices)} GPUs" if w.devices else ""))
    if w.error is not None:
        lines.append(f"does not fit: {w.error}")
        return lines
    for d in w.devices:
        lines.append(f"  GPU {d.index} ({_modules(d.modules)}): model {human(d.model_bytes)}, sources "
                     f"{human(d.source_bytes)}, headroom {human(d.headroom)} (reserve {human(d.reserve)})")
    tiers = [DEVICE, HOST, FILES] if w.gpu else [DEVICE, FILES]
    label = dict(TIER_LABEL) if w.gpu else {DEVICE: "host memory", FILES: "memory-mapped files"}
    for path in sources:
        per = w.sources.get(path, {})
        role = "base" if plan.base is not None and path == str(plan.base) else (
            "task vector" if plan.base is not None else "source")
        parts = ", ".join(f"{human(per[t])} {label[t]}" for t in tiers if per.get(t))
        lines.append(f"  {role} {path} ({w.storage_dtype}): {parts or '0 B'}")
    lines.append(f"  resident: {human(w.tier_bytes(DEVICE))} {label[DEVICE]}"
                 + (f", {human(w.tier_bytes(HOST))} pinned host" if w.gpu else "")
                 + f", {human(w.tier_bytes(FILES))} read from the files")
    if w.tables:
        lines.append(f"  source-only tables of the held task vectors (TIES / breadcrumbs magnitude orders, DELLA row "
                     f"ranks; built by the first candidate): {human(w.tables)} {label[DEVICE]}")
    lines.append(f"  headroom for activations / KV cache: {human(w.headroom)} (reserve {human(w.reserve)})")
    lines.append(f"  per candidate: {human(w.host_to_device)} host -> device, {human(w.file_reads)} read from "
                 "the source files")
    return lines


def _modules(names: Sequence[str]) -> str:
    """Module names with runs of numbered siblings folded: model.layers.0-39."""
    out: list[str] = []
    run: tuple[str, int, int] | None = None
    for name in names:
        m = re.fullmatch(r"(.*\.)(\d+)", name)
        if m and run and run[0] == m.group(1) and int(m.group(2)) == run[2] + 1:
            run = (run[0], run[1], int(m.group(2)))
            continue
        if run:
            out.append(f"{run[0]}{run[1]}" + (f"-{run[2]}" if run[2] != run[1] else ""))
            run = None
        if m:
            run = (m.group(1), int(m.group(2)), int(m.group(2)))
        else:
            out.append(name)
    if run:
        out.append(f"{run[0]}{run[1]}" + (f"-{run[2]}" if run[2] != run[1] else ""))
    return ", ".join(out)


def source_order(base: str | None, models: Sequence[str]) -> list[str]:
    """The sources' paths as the plan lists them: the base first."""
    paths = list(source_paths(base, models).values())
    if base is not None:
        paths.sort(key=lambda p: p != str(base))
    return paths


def plan_for_file(path: Path, **kwargs) -> tuple[MemoryPlan, list[str]]:
    """``evomerge plan CONFIG``: the plan and its text."""
    from evomerge.study.config import RunConfig

    config = RunConfig.load(path)
    plan = make_plan(config, **kwargs)
    assert config.sources is not None
    return plan, render(plan, source_order(config.sources.base, config.sources.models))
