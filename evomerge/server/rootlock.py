"""One `evomerge serve` per storage root: an OS advisory lock on a file in the root.

Two servers on one root would each open the same studies and hand out the same
genomes twice. ``fcntl.flock`` is held by the open file, so the kernel releases
it when the process ends in any way (``kill -9`` included): a crash never leaves
a stale lock to clean up by hand. The file holds the pid of the server that has
it, so the refusal can name it (the flock and the pid record are `runlock.take_flock`, shared with
the run-folder locks; unlike those, this lock is not counted per process). POSIX only.
"""

from __future__ import annotations

import os
from pathlib import Path

from evomerge.errors import EvomergeError
from evomerge.runlock import take_flock

LOCK_FILE = ".evomerge-serve.lock"


class StorageLockedError(EvomergeError):
    """Another server already serves this storage root."""


class StorageLock:
    """Holds the lock of one storage root until ``release`` (or the process's end)."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> StorageLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def lock_storage_root(root: str | Path) -> StorageLock:
    """Take the root's lock without waiting; StorageLockedError naming the holder's pid if another server has it.

    Not counted per process (unlike run folders): a second server in the same process is refused too.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fd = take_flock(fd, path, lambda holder: StorageLockedError(
        f"storage root {root} is already served by another `evomerge serve` ({holder}); "
        "stop that server or give another --storage"))
    return StorageLock(root, fd)
