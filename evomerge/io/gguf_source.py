"""GGUF sources: recognised by name, described in the error, converted once with `evomerge convert`.

evomerge merges safetensors (or legacy ``.bin``) checkpoints tensor by tensor;
a GGUF file packs llama.cpp's names, its q/k row permutation and block
quantizations. Rather than a second reader, a GGUF source is converted once
through transformers' own GGUF loader (``from_pretrained(..., gguf_file=...)``,
which dequantizes with the ``gguf`` package and undoes the permutations), so
the result is exactly what transformers would load from the file.

transformers refuses ``save_pretrained`` on a GGUF-loaded model (it carries a
GGUF quantizer even when every tensor was dequantized), so the weights are
moved into a fresh model built from the same config without its
``quantization_config`` and that model is saved.
"""

from __future__ import annotations

import copy
from pathlib import Path

from evomerge.errors import CheckpointError

__all__ = ["convert_gguf", "describe_gguf", "gguf_files"]


def gguf_files(path: Path) -> list[Path]:
    """``path`` itself when it is a ``.gguf`` file, else the ``.gguf`` files in the folder ``path``."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".gguf" else []
    return sorted(p for p in path.glob("*.gguf") if p.is_file()) if path.is_dir() else []


def describe_gguf(file: Path) -> str:
    """'GGUF file (llama, 2 layers, 21 tensors: Q4_K, F32)'; just 'GGUF file' without the ``gguf`` package."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return "GGUF file"
    try:
        reader = GGUFReader(str(file))
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field is not None else "unknown architecture"
        blocks = reader.fields.get(f"{arch}.block_count")
        layers = f", {int(blocks.parts[blocks.data[0]][0])} layers" if blocks is not None else ""
        kinds = sorted({t.tensor_type.name for t in reader.tensors})
        return f"GGUF file ({arch}{layers}, {len(reader.tensors)} tensors: {', '.join(kinds)})"
    except Exception as exc:  # a damaged file: say so, the conversion will fail with transformers' reason
        return f"GGUF file (unreadable: {exc})"


def gguf_error(path: Path, files: list[Path]) -> CheckpointError:
    """The error for a GGUF source: what the file is and the one command that converts it."""
    file = files[0]
    more = f" (and {len(files) - 1} more .gguf file(s); pick one)" if len(files) > 1 else ""
    out = file.parent / f"{file.stem}-hf"
    return CheckpointError(f"{file}: a {describe_gguf(file)}{more}; evomerge reads safetensors or .bin "
                           f"checkpoints — convert it once with: evomerge convert {file} {out}")


def convert_gguf(file: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the model in GGUF ``file`` (dequantized by transformers) as a safetensors folder ``out_dir``.

    The tokenizer is converted too when the file carries one (transformers builds
    it from the GGUF metadata); the output appears only when complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.io.writer import atomic_output_dir

    file = Path(file).expanduser()
    if not file.is_file() or file.suffix.lower() != ".gguf":
        raise CheckpointError(f"{file}: not a .gguf file")
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise CheckpointError(f"{file}: reading GGUF needs the 'gguf' package: pip install 'evomerge[gguf]'") from None
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype="auto")
    except Exception as exc:
        raise CheckpointError(f"{file}: transformers cannot load this GGUF file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=next(loaded.parameters()).dtype)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    except Exception:  # no tokenizer metadata in the file: the weights are still usable with another tokenizer
        tokenizer = None
    out = Path(out_dir)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out
