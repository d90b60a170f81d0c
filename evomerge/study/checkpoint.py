"""Atomic files: a checkpoint is either the old one or the new one, never a torn write."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def make_output_dir(path: Path, what: str = "output folder") -> Path:
    """``path`` created as a folder, or one line naming it and what to do (an existing file, no permission)."""
    from evomerge.errors import ConfigError

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: the {what} is an existing file; choose a folder path (or move the file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass  # an existing folder may still refuse new files
    except OSError as exc:
        raise ConfigError(f"{exc.filename or path}: cannot write the {what} here ({exc.strerror}); choose a folder "
                          "you can write to, or fix its permissions") from None
    return path


def save_pickle(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def load_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def claim_folder(folder: Path, config_file: str, config_text: str, resume_hint: str) -> Path:
    """``folder`` holding ``config_text`` in ``config_file``: written if new, refused with a diff if different.

    A run folder belongs to one config: resuming with another would mix two searches in one record.
    It also has one writer: the folder's lock (``evomerge.runlock``) is taken, for the life of this
    process, before anything is written there.
    """
    import difflib

    from evomerge import runlock
    from evomerge.errors import ConfigError

    runlock.acquire(folder)
    stored = folder / config_file
    if stored.is_file():
        old = stored.read_text()
        if old != config_text:
            runlock.release(folder)
            diff = "".join(difflib.unified_diff(old.splitlines(True), config_text.splitlines(True),
                                                f"{stored} (stored)", "new config"))
            raise ConfigError(f"{folder} already holds a run with another config; refusing to mix them. "
                              f"Use a new output folder, or `{resume_hint}`.\n{diff}")
        return folder
    atomic_write_bytes(stored, config_text.encode())
    return folder
