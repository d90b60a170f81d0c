"""Streaming a merge to disk, tensor by tensor, like ``mergekit-yaml`` but planned up front.

Sources are memory-mapped and read one tensor at a time; the output is written
straight into preallocated safetensors shards. Peak memory is therefore about
one tensor per source (plus the task vectors and the result), whatever the
model size. The output folder appears only when complete: everything is
written to a temporary sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from evomerge.io.checkpoint import Checkpoint, check_compatible, check_finite
from evomerge.io.dtypes import parse_dtype
from evomerge.io.writer import TOKENIZER_FILES, copy_model_files
from evomerge.materialize.execute import BufferPool, NonFiniteMergeError, gather_from_sources, run_task
from evomerge.materialize.plan import (  # open_checkpoints: re-exported, its home is the torch-free plan
    MergePlan,
    TensorRef,
    TensorTask,
    open_checkpoints,
    plan_merge,
)
from evomerge.materialize.publish import rewrite_layer_config, write_checkpoint
from evomerge.recipe.layout import place_of
from evomerge.recipe.model import Recipe
from evomerge.vocab.build import model_folder
from evomerge.vocab.output import set_vocab_size, write_tokenizer

RECIPE_FILE = "evomerge_recipe.json"


@dataclass
class MergeReport:
    out_dir: Path
    tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    files: list[Path]


def output_dtype(recipe: Recipe, checkpoints: dict[str, Checkpoint], plan: MergePlan) -> torch.dtype:
    """mergekit's rule: ``out_dtype``, else ``dtype``, else the dtype of the config model's weights."""
    text = recipe.out_dtype or recipe.dtype
    if text:
        return parse_dtype(text)
    ckpt = checkpoints[plan.config_model]
    return ckpt.info(ckpt.names[0]).dtype


def merge_to_disk(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 2**30,
    device: str | torch.device = "cpu",
    check_sources_finite: bool = True,
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> MergeReport:
    """Materialize ``recipe`` into a Hugging Face folder at ``out_dir``.

    A data-flow recipe (``layer_path``) is folded into a plain checkpoint with
    duplicated layers and its input scales folded into the residual writes.

    NaN/inf are caught where they matter: every merged tensor is checked (one
    fast reduction); when one is not finite, its sources are scanned so the
    error names the source tensor and file at fault (``check_sources_finite``).

    ``on_tensor(done, total, name)`` is called after each tensor (for progress bars).
    """
    if recipe.layer_path:
        from evomerge.materialize.dataflow import fold_layer_path_to_disk

        return fold_layer_path_to_disk(recipe, out_dir, overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                       device=device, on_tensor=on_tensor)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    with ExitStack() as stack:
        checkpoints = open_checkpoints(recipe)
        for ckpt in checkpoints.values():
            stack.callback(ckpt.close)
        if recipe.models is not None and len(checkpoints) > 1:
            check_compatible(list(checkpoints.values()), vocab_may_differ=recipe.tokenizer_settings is not None)
        plan = plan_merge(recipe, checkpoints)
        dtype = output_dtype(recipe, checkpoints, plan)
        bytes_read = 0

        def fetch(ref: TensorRef) -> torch.Tensor:
            nonlocal bytes_read
            tensor = checkpoints[ref.model].get(ref.name, device=device)
            bytes_read += tensor.numel() * tensor.element_size()
            return tensor

        def check_sources(task: TensorTask) -> None:
            for ref in (*([task.base] if task.base else []), *task.sources):
                ckpt = checkpoints[ref.model]
                check_finite(ckpt.get(ref.name), name=ref.name, path=ckpt.info(ref.name).file)

        def merged_tensors() -> Iterator[tuple[str, torch.Tensor]]:
            # Reading the next tensor's sources overlaps with merging the current one
            # (torch releases the GIL); at most two tasks' inputs are alive at once, and their
            # float32 buffers are recycled once a task is written.
            pool = BufferPool()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evomerge-read") as reader:
                pending = reader.submit(gather_from_sources, plan.tasks[0], fetch, pool) if plan.tasks else None
                for i, task in enumerate(plan.tasks):
                    assert pending is not None
                    base, inputs = pending.result()
                    if i + 1 < len(plan.tasks):
                        pending = reader.submit(gather_from_sources, plan.tasks[i + 1], fetch, pool)
                    try:
                        merged = run_task(task, base, inputs)
                    except NonFiniteMergeError:
                        if check_sources_finite:
                            check_sources(task)  # names the source tensor and file when a source is at fault
                        raise
                    yield task.out_name, merged  # written before the generator resumes
                    pool.give_back([*([base] if base is not None else []), *inputs])
                    del base, inputs, merged

        layers = output_layers(plan)
        files = write_checkpoint(
            out_dir, [(name, shape, dtype) for name, shape in plan.layout()], merged_tensors(),
            side_files=lambda tmp: write_model_files(tmp, recipe, checkpoints, plan, dtype, layers=layers),
            verify=is_surgery(layers, plan.config_model, checkpoints), overwrite=overwrite,
            max_shard_bytes=max_shard_bytes, on_tensor=on_tensor)
        bytes_written = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
    return MergeReport(out_dir=out_dir, tensors=len(plan.tasks), bytes_read=bytes_read, bytes_written=bytes_written,
                       seconds=time.perf_counter() - started, files=files)


def output_layers(plan: MergePlan) -> list[tuple[str, int]]:
    """Per output layer, the (model_key, layer) it is made from: its first task's first source."""
    layers: dict[int, tuple[str, int]] = {}
    for task in plan.tasks:
        if task.layer is not None and task.layer not in layers and task.sources:
            ref = task.sources[0]
            src_layer = place_of(ref.name).layer
            if src_layer is not None:
                layers[task.layer] = (ref.model, src_layer)
    return [layers[j] for j in sorted(layers)]


def is_surgery(layers: list[tuple[str, int]], config_model: str, checkpoints: Mapping[str, Checkpoint]) -> bool:
    """Whether the output's layers differ from the config model's own (the config must be rewritten)."""
    own = checkpoints[config_model].num_layers
    return len(layers) != own or any(layer != j or (model != config_model and _layer_config_differs(
        checkpoints[model], checkpoints[config_model])) for j, (model, layer) in enumerate(layers))


def _layer_config_differs(a: Checkpoint, b: Checkpoint) -> bool:
    return a.num_layers != b.num_layers or a.config.get("model_type") != b.config.get("model_type")


def write_model_files(out: Path, recipe: Recipe, checkpoints: Mapping[str, Checkpoint], plan: MergePlan,
                      dtype: torch.dtype, *, layers: Sequence[tuple[str, int]] | None = None) -> None:
    """config.json (describing the output's layers), tokenizer files, and the recipe for provenance.

    ``layers`` lists each output layer's (model_key, source layer); when they are
    not the config model's own layers, every layer-dependent config field is
    rewritten (`evomerge.materialize.layer_config`).
    """
    copy_model_files(checkpoints[plan.config_model].folder, out, torch_dtype=dtype)
    if plan.vocabulary is None and plan.tokenizer_model != plan.config_model:
        tok_dir = model_folder(plan.tokenizer_model)
        for name in TOKENIZER_FILES:
            if (tok_dir / name).is_file():
                (out / name).write_bytes((tok_dir / name).read_bytes())
    write_tokenizer(out, recipe, plan)
    if layers is not None and is_surgery(list(layers), plan.config_model, checkpoints):
        rewrite_layer_config(out, [(checkpoints[model].config, layer) for model, layer in layers])
    config_path = out / "config.json"
    if plan.vocabulary is not None and config_path.is_file():
        config = json.loads(config_path.read_text())
        set_vocab_size(config, plan.vocabulary.rows)
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / RECIPE_FILE).write_text(recipe.to_json() + "\n")
