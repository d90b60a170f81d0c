"""A Hugging Face model folder opened lazily (the checks across several live in `validate`).

Opening parses only headers (safetensors) so that indexing a 7B model is
instant and a truncated or corrupt shard is reported by path before a long
search starts; tensors are then read one at a time by memory map, which keeps
peak memory at about one tensor per source whatever the model size.

Opening a safetensors checkpoint imports no torch (dtypes are names from
`evomerge.io.dtype_table`), so `evomerge plan` and `recipe check` answer in a
fraction of a second; torch is imported when a tensor is read, a
``TensorInfo.dtype`` is asked for, or a pickle ``.bin`` is indexed (only
``torch.load``'s weights-only unpickler may read those).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from evomerge.errors import CheckpointError
from evomerge.io.dtype_table import FLOATING, ITEMSIZE, torch_dtype
from evomerge.io.dtype_table import dtype_name as name_of
from evomerge.io.gguf_source import gguf_error, gguf_files
from evomerge.io.json_object import read_json_object
from evomerge.io.safetensors_format import read_header
from evomerge.io.validate import check_compatible, check_finite  # re-exported: part of this module's API

if TYPE_CHECKING:
    import torch



__all__ = ["Checkpoint", "TensorInfo", "check_compatible", "check_finite"]

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it is, known without reading it (nor importing torch)."""

    name: str
    shape: tuple[int, ...]
    dtype_name: str  # torch's name of the dtype ("bfloat16"); a torch.dtype given here is stored by name
    file: Path
    nbytes: int

    def __post_init__(self) -> None:
        if not isinstance(self.dtype_name, str):
            object.__setattr__(self, "dtype_name", name_of(self.dtype_name))

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype (imports torch)."""
        return torch_dtype(self.dtype_name)

    @property
    def itemsize(self) -> int:
        """Bytes per element (from torch for a pickled dtype outside the safetensors table)."""
        size = ITEMSIZE.get(self.dtype_name)
        return size if size is not None else self.dtype.itemsize

    @property
    def is_floating(self) -> bool:
        return self.dtype_name in FLOATING


class Checkpoint:
    """A Hugging Face model folder opened lazily: an index name -> TensorInfo, tensors read by memory map
    one at a time.

    Safetensors files are indexed from their headers alone. Legacy pickle
    ``.bin`` checkpoints are accepted but only through ``torch.load(weights_only=True, mmap=True)``
    (see `evomerge.io.pickle_weights` for why): loaded once, memory-mapped, handed out by name.
    """

    def __init__(
        self,
        path: Path,
        config: dict,
        infos: dict[str, TensorInfo],
        *,
        file_sizes: dict[Path, int] | None = None,
        pickled: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self._infos = infos
        self.names: list[str] = list(infos)
        self._file_sizes = file_sizes or {}
        self._pickled = pickled
        self._closed = False

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        """Index the weights at ``path`` (a model folder or a single ``.safetensors`` file).

        Looks, in order, for ``model.safetensors.index.json``, ``model.safetensors``, any
        ``*.safetensors``, then ``pytorch_model.bin.index.json``, ``pytorch_model.bin``, any ``*.bin``.
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint folder or file")
        if path.is_file():
            if path.suffix == ".safetensors":
                return cls._open_safetensors(path, _read_config(path.parent), [path])
            if path.suffix == ".bin":
                return cls._open_pickle(path, _read_config(path.parent), {}, [path])
            if files := gguf_files(path):
                raise gguf_error(path, files)
            raise CheckpointError(f"{path}: not a checkpoint — pass a model folder or a .safetensors file")
        config = _read_config(path)
        if (path / SAFE_INDEX).is_file():
            weight_map = _read_weight_map(path / SAFE_INDEX)
            return cls._open_safetensors(path, config, _shards(path, SAFE_INDEX, weight_map), weight_map)
        if (path / SAFE_SINGLE).is_file():
            return cls._open_safetensors(path, config, [path / SAFE_SINGLE])
        if files := sorted(path.glob("*.safetensors")):
            return cls._open_safetensors(path, config, files)
        if (path / BIN_INDEX).is_file():
            weight_map = _read_weight_map(path / BIN_INDEX)
            return cls._open_pickle(path, config, weight_map, _shards(path, BIN_INDEX, weight_map))
        if (path / BIN_SINGLE).is_file():
            return cls._open_pickle(path, config, {}, [path / BIN_SINGLE])
        if files := sorted(path.glob("*.bin")):
            return cls._open_pickle(path, config, {}, files)
        if files := gguf_files(path):
            raise gguf_error(path, files)
        raise CheckpointError(
            f"{path}: no weights found (looked for {SAFE_INDEX}, {SAFE_SINGLE}, *.safetensors, {BIN_INDEX}, "
            f"{BIN_SINGLE}, *.bin); point evomerge at the folder that holds the model's weights"
        )

    @classmethod
    def _open_safetensors(
        cls, path: Path, config: dict, files: list[Path], weight_map: dict[str, str] | None = None
    ) -> Checkpoint:
        found: dict[str, TensorInfo] = {}
        sizes: dict[Path, int] = {}
        for file in files:
            header = read_header(file)
            sizes[file] = file.stat().st_size
            for e in header.entries:
                if e.name in found:
                    raise CheckpointError(
                        f"{path}: tensor {e.name!r} is stored twice, "
                        f"in {found[e.name].file.name} and {file.name}"
                    )
                found[e.name] = TensorInfo(e.name, e.shape, e.dtype_name, file, e.end - e.begin)
        if weight_map is None:
            infos = found
        else:
            infos = {}
            for name, shard in weight_map.items():
                info = found.get(name)
                if info is None or info.file.name != Path(shard).name:
                    raise CheckpointError(
                        f"{path / SAFE_INDEX}: maps tensor {name!r} to {shard}, which does not contain it; "
                        "the index and the shards do not belong together — fetch the checkpoint again"
                    )
                infos[name] = info
        return cls(path, config, infos, file_sizes=sizes)

    @classmethod
    def _open_pickle(
        cls, path: Path, config: dict, weight_map: dict[str, str], files: list[Path]
    ) -> Checkpoint:
        from evomerge.io.pickle_weights import load_state_dict  # torch.load: a pickle is indexed by loading it

        tensors: dict[str, torch.Tensor] = {}
        infos: dict[str, TensorInfo] = {}
        for file in files:
            for name, t in load_state_dict(file).items():
                if name in infos:
                    raise CheckpointError(
                        f"{path}: tensor {name!r} is stored twice, in {infos[name].file.name} and {file.name}"
                    )
                tensors[name] = t
                infos[name] = TensorInfo(name, tuple(t.shape), t.dtype, file, t.numel() * t.element_size())
        for name, shard in weight_map.items():
            if name not in infos or infos[name].file.name != Path(shard).name:
                raise CheckpointError(
                    f"{path / BIN_INDEX}: maps tensor {name!r} to {shard}, which does not contain it; "
                    "the index and the shards do not belong together — fetch the checkpoint again"
                )
        if weight_map:
            infos = {name: infos[name] for name in weight_map}
        return cls(path, config, infos, pickled=tensors)

    # ---------------------------------------------------------------- index
    def info(self, name: str) -> TensorInfo:
        """Shape, dtype, file and size of ``name``, without reading it."""
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(
                f"{self.path}: has no tensor {name!r} ({len(self)} tensors, e.g. {self.names[:3]})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self)} tensors, {self.total_bytes} bytes)"

    @property
    def folder(self) -> Path:
        """The model folder (``path`` itself, or the folder of a lone ``.safetensors`` file): where
        config and tokenizer files live."""
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def files(self) -> list[Path]:
        """The weight files, in index order."""
        return list(dict.fromkeys(info.file for info in self._infos.values()))

    @property
    def total_bytes(self) -> int:
        """Bytes of all tensors as stored (what a merge must read once per source)."""
        return sum(info.nbytes for info in self._infos.values())

    @property
    def num_layers(self) -> int | None:
        """Transformer blocks: config ``num_hidden_layers`` (or ``n_layer``), else max ``layers.N.`` + 1."""
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            value = self.config.get(key)
            if isinstance(value, int):
                return value
        indices = [int(m.group(1)) for name in self.names if (m := _LAYER_RE.search(name))]
        return max(indices) + 1 if indices else None

    # ---------------------------------------------------------------- reading
    def get(
        self, name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Read one tensor (memory-mapped), optionally cast and moved; errors name the file and tensor."""
        info = self.info(name)
        if self._closed:
            raise CheckpointError(f"{self.path}: checkpoint is closed; cannot read tensor {name!r}")
        if self._pickled is not None:
            stored = self._pickled[name]
            tensor = stored.to(device=device, dtype=dtype or stored.dtype)
            # The loaded dict is shared by every call: hand out a copy so in-place updates stay local.
            return tensor.clone() if tensor is stored else tensor
        tensor = self._read_safetensors(info)
        return tensor.to(device=device, dtype=dtype or tensor.dtype)

    def _read_safetensors(self, info: TensorInfo) -> torch.Tensor:
        from safetensors import safe_open

        try:
            size = info.file.stat().st_size
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor {info.name!r} ({exc})") from exc
        if size != self._file_sizes[info.file]:
            # A memory-mapped file that shrank would crash the process (SIGBUS) on access.
            raise CheckpointError(
                f"{info.file}: changed size since it was opened "
                f"({self._file_sizes[info.file]} -> {size} bytes) "
                f"while reading tensor {info.name!r}; was it overwritten or truncated? Re-open the checkpoint"
            )
        try:
            # A fresh (private, copy-on-write) map per call: the header parse costs ~0.1 ms, and a
            # caller that updates the tensor in place cannot change what the next get() returns.
            with safe_open(str(info.file), framework="pt", device="cpu") as handle:
                tensor = handle.get_tensor(info.name)
        except Exception as exc:  # safetensors raises its own SafetensorError and plain OSErrors
            raise CheckpointError(f"{info.file}: cannot read tensor {info.name!r} ({exc})") from exc
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise CheckpointError(
                f"{info.file}: tensor {info.name!r} read as {tuple(tensor.shape)} {tensor.dtype}, "
                "header said "
                f"{info.shape} {info.dtype}; the file changed since it was opened — re-open the checkpoint"
            )
        return tensor

    def close(self) -> None:
        """Drop the loaded ``.bin`` tensors; later reads raise. Tensors already returned stay valid."""
        self._closed = True
        self._pickled = {} if self._pickled is not None else None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -------------------------------------------------------------------- helpers
def _read_config(folder: Path) -> dict:
    file = folder / "config.json"
    return read_json_object(file) if file.is_file() else {}


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index}: not valid JSON ({exc}); fetch the checkpoint again") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: has no 'weight_map' object of tensor name -> shard file")
    return weight_map


def _shards(folder: Path, index_name: str, weight_map: dict[str, str]) -> list[Path]:
    files = [folder / shard for shard in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            users = [n for n, s in weight_map.items() if folder / s == file]
            raise CheckpointError(
                f"{folder / index_name}: points to shard {file.name}, which is missing from {folder} "
                f"(it holds {len(users)} tensors, e.g. {users[0]!r}); fetch the missing file"
            )
    return files
