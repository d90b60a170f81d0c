"""One `evomerge serve` per storage root: an OS advisory lock on a file in the root.

Two servers on one root would each open the same studies and hand out the same
genomes twice. ``fcntl.flock`` is held by the open file, so the kernel releases
it when the process ends in any way (``kill -9`` included): a crash never leaves
a stale lock to clean up by hand. The file holds the pid of the server that has
it, so the refusal can name it. (POSIX only: evomerge serves from Linux/macOS.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from evomerge.errors import EvomergeError

LOCK_FILE = ".evomerge-serve.lock"


class StorageLockedError(EvomergeError):
    """Another server already serves this storage root."""


class StorageLock:
    """Holds the lock of one storage root until ``release`` (or the process's end)."""

    def __init__(self, root: Path, handle: IO[str]) -> None:
        self.root = root
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None

    def __enter__(self) -> StorageLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def lock_storage_root(root: str | Path) -> StorageLock:
    """Take the root's lock without waiting; StorageLockedError naming the holder's pid if another server has it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the server's lifetime: the open file *is* the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StorageLockedError(f"storage root {root} is already served by another `evomerge serve` (pid {holder}); "
                                 "stop that server or give another --storage") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return StorageLock(root, handle)
