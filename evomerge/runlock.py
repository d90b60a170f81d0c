"""One writer per folder: an OS advisory lock (``flock``) on ``FOLDER/.lock``, which holds the owner's pid.

Two processes writing one run folder (a ``run`` and a ``resume`` started by
mistake, two servers on one storage root) would evaluate the same genomes twice
and interleave two searches in one record. The kernel holds an ``flock`` for as
long as the file descriptor is open and drops it when the process dies, even on
``kill -9``, so a crash never leaves a stale lock to clean up by hand; the pid in
the file is only there to name the holder in the refusal.

Locks are counted per folder within a process, so code paths that claim the same
folder twice (a two-stage run claiming its folder, then a stage resuming in it)
do not lock themselves out. The lock file is never deleted: unlinking a lock
file while another process waits on it lets two processes each hold "the" lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from evomerge.errors import ConfigError, EvomergeError

LOCK_FILE = ".lock"

_held: dict[Path, list[int]] = {}  # resolved folder -> [fd, count]
_guard = threading.Lock()


class FolderLockedError(EvomergeError):
    """Another process is writing this folder."""


def acquire(folder: str | Path, what: str = "run folder") -> Path:
    """Lock ``folder`` (created if missing) for this process; refuse at once if another process holds it.

    Held until ``release`` is called as often as ``acquire`` was, or until the process exits.
    """
    key = Path(folder).expanduser().resolve()
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        if key.exists() and not key.is_dir():
            raise ConfigError(f"{key}: the {what} is an existing file; choose a folder path (or move the file)")
        try:
            key.mkdir(parents=True, exist_ok=True)
            fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            where = exc.filename or key
            raise ConfigError(f"{where}: cannot write the {what} here ({exc.strerror}); choose a folder you can "
                              "write to, or fix its permissions") from None
        fd = take_flock(fd, key / LOCK_FILE, lambda holder: FolderLockedError(
            f"{key}: this {what} is in use by {holder} (lock {key / LOCK_FILE}); "
            "wait for it to finish or stop it, then run again"))
        _held[key] = [fd, 1]
        return key


def take_flock(fd: int, path: Path, refusal: Callable[[str], EvomergeError]) -> int:
    """Lock the open file ``fd`` (at ``path``) without waiting and write this pid into it.

    Closes ``fd`` and raises ``refusal(holder)`` (holder: "pid N") when another process has it.
    Shared by the run-folder locks here and the server's storage-root lock.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise refusal(f"pid {holder}" if holder.isdigit() else "another process") from None
    except OSError as exc:
        os.close(fd)
        raise FolderLockedError(f"{path}: cannot take the lock ({exc.strerror})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(folder: str | Path) -> None:
    """Undo one ``acquire`` of ``folder``; the lock is dropped when the last one is undone."""
    key = Path(folder).expanduser().resolve()
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _held[key]
            os.close(entry[0])  # closing the descriptor drops the flock; the file stays (see module docstring)


def holds(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return Path(folder).expanduser().resolve() in _held


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[Path]:
    """``with folder_lock(run_dir):`` the one writer of ``run_dir`` for the block (see ``acquire``)."""
    key = acquire(folder, what)
    try:
        yield key
    finally:
        release(key)
