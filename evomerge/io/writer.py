"""Writing a merged checkpoint: streamed sharded safetensors, config/tokenizer files, atomic output.

The whole output layout (names, shapes, dtypes) is known before the first
tensor is computed, so shard assignment and every shard's header are fixed up
front and each tensor's bytes go straight to their final offset. Peak memory
is then one tensor (plus its cast copy), not one model, which is what lets a
7B merge run on a machine with less RAM than the model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import torch

from evomerge.errors import CheckpointError, ConfigError
from evomerge.io.dtypes import DTYPE_TO_CODE
from evomerge.io.json_object import read_json_object
from evomerge.io.safetensors_format import plan_header

__all__ = ["TOKENIZER_FILES", "ShardedWriter", "atomic_output_dir", "copy_model_files"]

Layout = Sequence[tuple[str, tuple[int, ...], torch.dtype]]

# A background flush starts once this much was written since the last one started (see _flush_behind).
_FLUSH_EVERY_BYTES = 64 << 20

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def assign_shards(
    layout: Layout, max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...], torch.dtype]]]:
    """Split ``layout`` in order into shards of at most ``max_shard_bytes`` of tensor data.

    Same rule as transformers' ``save_pretrained``: start a new shard when the next
    tensor would overflow the current one; a tensor larger than the limit gets a
    shard of its own.
    """
    shards: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = [[]]
    size = 0
    for name, shape, dtype in layout:
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tuple(shape), dtype))
        size += nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    """``model.safetensors`` for one shard, ``model-0000k-of-0000N.safetensors`` for several."""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]


class ShardedWriter:
    """Streams tensors into sharded safetensors with an index, never holding more than one tensor.

    Tensors may be written in any order; each is cast to its layout dtype and its
    bytes are written at the offset fixed when the writer was created. `close`
    checks that every tensor arrived and writes the index.
    """

    def __init__(self, out_dir: Path, layout: Layout, *, max_shard_bytes: int = 5 * 2**30) -> None:
        if sys.byteorder != "little":  # safetensors is little-endian; we copy raw memory
            raise CheckpointError("ShardedWriter needs a little-endian machine")
        if max_shard_bytes <= 0:
            raise ConfigError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.out_dir = Path(out_dir)
        self._layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for name, shape, dtype in layout:
            if name in self._layout:
                raise CheckpointError(f"output layout lists tensor {name!r} twice")
            if dtype not in DTYPE_TO_CODE:
                raise CheckpointError(f"tensor {name!r}: safetensors cannot store dtype {dtype}")
            self._layout[name] = (tuple(int(d) for d in shape), dtype)
        shards = assign_shards([(n, s, d) for n, (s, d) in self._layout.items()], max_shard_bytes)
        self.files = [self.out_dir / f for f in shard_file_names(len(shards))]
        self._where: dict[str, tuple[int, int, int]] = {}  # name -> (shard index, begin, end)
        self._written: set[str] = set()
        self._closed = False
        self._flusher: ThreadPoolExecutor | None = None  # see _flush_behind
        self._flushing: Future[None] | None = None
        self._unflushed = 0  # bytes written since the last background flush started
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for k, (file, tensors) in enumerate(zip(self.files, shards, strict=True)):
            header, offsets = plan_header(tensors)
            for name, (begin, end) in offsets.items():
                self._where[name] = (k, begin, end)
            try:
                with open(file, "wb") as f:
                    f.write(header)
                    # Size the file now (sparse where the filesystem allows): a tensor that is
                    # never written leaves a hole that close() reports, never a short file.
                    f.truncate(max((end for _, end in offsets.values()), default=len(header)))
            except OSError as exc:
                raise CheckpointError(f"{file}: cannot create output shard ({exc})") from exc

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write ``tensor`` as output tensor ``name`` (cast to the layout dtype, moved to the CPU)."""
        if self._closed:
            raise CheckpointError(f"tensor {name!r}: writer for {self.out_dir} is already closed")
        if name not in self._layout:
            raise CheckpointError(f"tensor {name!r} is not in the output layout of {self.out_dir}")
        if name in self._written:
            raise CheckpointError(f"tensor {name!r} was already written to {self.out_dir}")
        shape, dtype = self._layout[name]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"tensor {name!r} has shape {tuple(tensor.shape)} but the output layout says {shape}"
            )
        k, begin, end = self._where[name]
        data = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy() if data.numel() else b""
        if len(raw) != end - begin:  # cannot happen unless torch and safetensors disagree on a dtype size
            raise CheckpointError(f"tensor {name!r}: {len(raw)} bytes but the header reserved {end - begin}")
        file = self.files[k]
        try:  # one open per tensor (~10 µs) keeps no descriptors alive, however many shards
            with open(file, "r+b") as f:
                f.seek(begin)
                f.write(memoryview(raw))
        except OSError as exc:
            raise CheckpointError(f"{file}: cannot write tensor {name!r} ({exc})") from exc
        self._written.add(name)
        self._unflushed += len(raw)
        if self._unflushed >= _FLUSH_EVERY_BYTES:
            self._flush_behind(file)

    def _flush_behind(self, file: Path) -> None:
        """Start flushing ``file`` to disk in the background unless a flush is still running.

        The data must be on disk before the output is renamed into place (``close``
        syncs every shard); flushing while later tensors are computed leaves that
        final sync only the last few tensors to write instead of the whole model.
        """
        if self._flushing is not None:
            if not self._flushing.done():
                return
            self._flushing.result()  # an I/O error surfaces here, or at close
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evomerge-flush")
        self._flushing = self._flusher.submit(_datasync, file)
        self._unflushed = 0

    @property
    def missing(self) -> list[str]:
        """Layout tensors not written yet, in layout order."""
        return [name for name in self._layout if name not in self._written]

    def close(self) -> list[Path]:
        """Check every tensor was written, write the index when sharded, return the files written."""
        if self._closed:
            return self._result()
        missing = self.missing
        self._closed = True
        self._stop_flusher()
        if missing:
            raise CheckpointError(
                f"{self.out_dir}: {len(missing)} tensor(s) of the layout were never written, e.g. "
                f"{missing[:5]}; the output is incomplete"
            )
        if len(self.files) > 1:
            weight_map = {name: self.files[self._where[name][0]].name for name in self._layout}
            total = sum(end - begin for _, begin, end in self._where.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for file in self._result():  # on disk before atomic_output_dir renames the folder into place
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
        return self._result()

    def _stop_flusher(self) -> None:
        flushing, self._flushing = self._flushing, None
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None
        if flushing is not None:
            flushing.result()

    def _result(self) -> list[Path]:
        return [*self.files, *([self.out_dir / INDEX_FILE] if len(self.files) > 1 else [])]

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's error wins; do not mask it with "tensors missing"
            self._closed = True
            with contextlib.suppress(CheckpointError):
                self._stop_flusher()


def _datasync(file: Path) -> None:
    try:
        with open(file, "rb+") as f:
            getattr(os, "fdatasync", os.fsync)(f.fileno())  # macOS has no fdatasync
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot flush the output to disk ({exc})") from exc


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def copy_model_files(src: Path, out: Path, *, torch_dtype: torch.dtype | None = None) -> None:
    """Copy what makes ``out`` a loadable model besides its weights: config, generation config, tokenizer.

    ``config.json``'s dtype field is set to ``torch_dtype`` so that ``from_pretrained`` (with
    ``dtype="auto"``) loads the merge in the dtype it was written in. Files absent from ``src`` are skipped.
    """
    src, out = Path(src), Path(out)
    if src.is_file():  # a lone .safetensors file: its folder holds the rest
        src = src.parent
    if not src.is_dir():
        raise CheckpointError(f"{src}: no such model folder to copy config and tokenizer from")
    out.mkdir(parents=True, exist_ok=True)
    config_file = src / "config.json"
    if config_file.is_file():
        config = read_json_object(config_file)
        if torch_dtype is not None:
            value = str(torch_dtype).removeprefix("torch.")
            keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype", "torch_dtype"]
            for key in keys:  # transformers >= 4.56 writes "dtype", older ones "torch_dtype"
                config[key] = value
        (out / "config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)


@contextlib.contextmanager
def atomic_output_dir(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out`` and move it into place only if the block succeeds.

    A merge killed halfway (error, Ctrl-C, OOM inside Python) then leaves either
    the old ``out`` or nothing, never a folder that looks like a model but is not.
    An existing non-empty ``out`` is refused unless ``overwrite``; it is then removed
    only after the new one is complete.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder; choose another output path")
        if not overwrite and any(out.iterdir()):
            raise ConfigError(f"{out}: output folder exists and is not empty; pass overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{tag}"
    try:
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
