"""A worker spanning several devices: the model's layers split by accelerate's device map, each source beside its layer.

With ``runner.gpus_per_worker: k`` (k > 1) one worker holds one model instance
split over k devices, as ``from_pretrained(device_map=...)`` splits it: whole
decoder layers (the model's ``_no_split_modules``) per device, the activations
moved between them by accelerate's hooks. Every resident source tensor (the
base and the task vectors of a parameter, its TIES order) is kept on the device
of the parameter it merges into, so a candidate's merge runs where each
parameter lives and nothing but activations crosses devices.

The split is computed from ``config.json`` alone (a model on the ``meta``
device) with accelerate's ``get_balanced_memory`` + ``infer_auto_device_map``,
over budgets scaled so that a device's share of the layers leaves room for
those layers' resident sources too. ``evomerge plan`` and the worker call the
same function, so the plan prints the worker's split. The devices are a list
of names: a worker on k GPUs gets ``cuda:0..k-1``, the CPU tests the same
logic over ``["cpu", "cpu"]`` (the layout is then checked by device index).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from evomerge.errors import ConfigError


@dataclass(frozen=True)
class DeviceSplit:
    """Which of a worker's ``devices`` holds each module (accelerate's device map, with device indices)."""

    devices: tuple[torch.device, ...]
    modules: Mapping[str, int]  # module name ("" for the whole model) -> index into devices, in model order

    def index_of(self, param_name: str) -> int:
        """The device index of a parameter (or buffer) name: its longest module prefix in the map."""
        best, found = -1, 0
        for module, index in self.modules.items():
            if (module == "" or param_name == module or param_name.startswith(module + ".")) and len(module) > best:
                best, found = len(module), index
        if best < 0:
            raise ConfigError(f"the device map of this worker places no module holding '{param_name}'")
        return found

    def device_map(self) -> dict[str, str]:
        """The map ``from_pretrained(device_map=...)`` takes: module name -> device name."""
        return {module: str(self.devices[index]) for module, index in self.modules.items()}

    def per_device(self) -> list[list[str]]:
        """Module names per device index, in model order."""
        out: list[list[str]] = [[] for _ in self.devices]
        for module, index in self.modules.items():
            out[index].append(module)
        return out


def meta_model(template: str | Path, dtype: torch.dtype) -> torch.nn.Module:
    """The template's model class built from its config.json on the ``meta`` device: shapes and names, no memory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(template)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


@contextmanager
def _quiet_accelerate():
    """accelerate warns 'Device 0 is not available' for integer device keys on a machine without them: we plan
    for devices named by index, wherever they are."""
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _infer(model: torch.nn.Module, budgets: Sequence[int], dtype: torch.dtype) -> dict[str, int | str]:
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    memory: dict[int | str, int] = {i: max(0, int(b)) for i, b in enumerate(budgets)}
    with _quiet_accelerate():
        balanced = get_balanced_memory(model, max_memory=dict(memory), no_split_module_classes=no_split, dtype=dtype)
        balanced = {k: min(int(v), memory[k]) for k, v in balanced.items() if k in memory}
        return dict(infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype))


def split_layers(model: torch.nn.Module, capacities: Sequence[int], *, model_dtype: torch.dtype,
                 resident_bytes_per_element: int = 0, where: str = "the worker") -> dict[str, int]:
    """Module name -> device index for ``model`` over devices of ``capacities`` bytes (model and sources).

    Each parameter element costs ``model_dtype``'s bytes in the instance plus
    ``resident_bytes_per_element`` in the sources kept beside it (one element per
    source at the storage dtype), so the layers are balanced over budgets scaled
    by the instance's share of that. If the sources cannot all fit, the layers
    are split for the instance alone (the sources' rest goes to host memory or
    the files, per device). Refuses, with the numbers, a model that fits nowhere.
    """
    from evomerge.exec.memory_plan import human

    if len(capacities) < 2:
        raise ConfigError(f"{where}: a split needs at least 2 devices, got {len(capacities)}")
    element = model_dtype.itemsize
    share = element / (element + resident_bytes_per_element)
    for budgets in ([c * share for c in capacities], list(capacities)):
        found = _infer(model, budgets, model_dtype)
        if all(isinstance(v, int) for v in found.values()):
            return {module: int(index) for module, index in found.items()}
    total = sum(p.numel() for p in model.parameters()) * element
    raise ConfigError(f"{where}: the model instance ({human(total)} in {str(model_dtype).removeprefix('torch.')}) "
                      f"does not fit {len(capacities)} devices of {', '.join(human(c) for c in capacities)} "
                      "(after the reserve for activations), whole decoder layers per device; use more devices, "
                      "devices with more memory or runner.model_dtype: bfloat16")


def plan_split(template: str | Path, devices: Sequence[str | torch.device], capacities: Sequence[int], *,
               model_dtype: torch.dtype, resident_bytes_per_element: int = 0,
               model: torch.nn.Module | None = None) -> DeviceSplit:
    """The split of the template checkpoint's model over ``devices`` (``capacities``: bytes each may use)."""
    if len(devices) != len(capacities):
        raise ConfigError(f"{len(devices)} devices but {len(capacities)} memory budgets")
    model = model if model is not None else meta_model(template, model_dtype)
    modules = split_layers(model, capacities, model_dtype=model_dtype,
                           resident_bytes_per_element=resident_bytes_per_element, where=f"model {template}")
    return DeviceSplit(tuple(torch.device(d) for d in devices), modules)


def tensor_slots(split: DeviceSplit, landing) -> dict[str, int]:
    """Checkpoint tensor name -> device index: the device of the parameter it lands in (``landing``: a LoadMap)."""
    slots: dict[str, int] = {}
    for name in landing.checkpoint_names():
        indices = {split.index_of(param) for param in landing.targets(name)}
        if len(indices) != 1:
            raise ConfigError(f"checkpoint tensor '{name}' lands in parameters on devices {sorted(indices)}")
        slots[name] = indices.pop()
    return slots
