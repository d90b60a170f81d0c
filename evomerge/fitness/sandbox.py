"""Running untrusted generated Python (a candidate's code answers) with limits, for code-execution fitness.

A merged model's code is not malicious, but it is often wrong in the ways that hurt a
shared machine: infinite loops, runaway memory, a process spawned per loop turn, files
written next to the user's data. Layers, each where the machine allows it:

- a fresh temporary directory as the working directory, removed afterwards;
- ``resource.setrlimit``: CPU seconds, address space, file size, open files, no core;
  a wall-clock timeout on top (a sleeping loop uses no CPU);
- its own session (``setsid``): the whole process group is killed at the end;
- as root, the child drops to ``nobody`` (65534), so it can write nothing root owns and
  ``RLIMIT_NPROC`` is enforced (the kernel never enforces it for root);
- ``unshare --user --net --pid --fork --kill-child`` where user namespaces are allowed: no
  network, and the child is PID 1 of its own namespace, so when it dies every process it
  forked dies with it;
- inside the interpreter, a PEP 578 audit hook (which Python code cannot remove) refuses
  writes outside the directory, new processes, sockets and ctypes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534

_GUARD = r'''
import os, sys
_ROOT = os.path.realpath(os.getcwd())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.remove", "os.rename", "os.replace", "os.mkdir", "os.rmdir", "os.symlink", "os.link",
                "os.chmod", "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
                "shutil.copyfile", "shutil.copytree", "os.chdir"}
_DENY = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile",
         "os.kill", "os.killpg", "subprocess.Popen", "pty.spawn", "socket.", "ctypes.", "os.setuid", "os.setgid")

def _inside(path):
    if isinstance(path, int):
        return True
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path}")
    elif event in _PATH_EVENTS:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed: {a}")
    elif event.startswith(_DENY):
        raise PermissionError(f"sandbox: {event} is not allowed")
    elif event == "import" and args[0] in ("ctypes", "_ctypes", "multiprocessing", "_posixsubprocess"):
        raise ImportError(f"sandbox: import of {args[0]} is not allowed")

sys.addaudithook(_hook)
del _hook
_path = sys.argv[1]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
exec(_code, {"__name__": "__main__", "__file__": _path})
'''


@dataclass(frozen=True)
class Limits:
    """What one run may use; the defaults fit a unit-test-sized solution."""

    cpu_seconds: int = 2
    wall_seconds: float = 5.0
    memory_mb: int = 512
    processes: int = 8  # RLIMIT_NPROC for the nobody user (only enforced when not root)
    file_mb: int = 8
    open_files: int = 64


@dataclass(frozen=True)
class RunOutcome:
    returncode: int | None  # None: killed at the wall-clock limit
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _others_can_execute(path: str) -> bool:
    """Every folder on the way is searchable and the file executable by anybody (the nobody user)."""
    p = Path(path).resolve()
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(q.stat().st_mode & stat.S_IXOTH for q in p.parents)
    except OSError:
        return False


@functools.cache
def interpreter() -> str:
    """A Python the child can run: this one, or the system's when this one sits in a private folder."""
    if os.geteuid() != 0:
        return sys.executable
    for cand in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if cand and _others_can_execute(cand):
            return cand
    raise RuntimeError("sandbox: no Python interpreter the nobody user can run (this one is in a private folder); "
                       "install python3 system-wide")


@functools.cache
def namespaces_available() -> bool:
    """Whether ``unshare --user --net --pid --fork`` works here (it does not in many containers)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "--user", "--net", "--pid", "--fork", "--kill-child", "true"],
                              capture_output=True, timeout=10, preexec_fn=_drop_root).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _drop_root() -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _limit(limits: Limits) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_CPU, limits.cpu_seconds), (resource.RLIMIT_AS, limits.memory_mb * mb),
                       (resource.RLIMIT_FSIZE, limits.file_mb * mb), (resource.RLIMIT_NOFILE, limits.open_files),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, limits.processes)):
        resource.setrlimit(res, (value, value))
    _drop_root()


def run_python(code: str, limits: Limits = Limits(), *, stdin: str = "", audit_hook: bool = True) -> RunOutcome:
    """Run ``code`` as a script in a fresh temporary directory under every layer the machine allows.

    ``audit_hook=False`` leaves only the operating system's layers (tests check those on their own)."""
    work = Path(tempfile.mkdtemp(prefix="evomerge-sandbox-"))
    try:
        (work / "solution.py").write_text(code, encoding="utf-8")
        (work / "_guard.py").write_text(_GUARD, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        guard = [str(work / "_guard.py")] if audit_hook else []
        cmd = [interpreter(), "-I", "-B", "-S", *guard, str(work / "solution.py")]
        if namespaces_available():
            cmd = [shutil.which("unshare") or "unshare", "--user", "--net", "--pid", "--fork", "--kill-child", *cmd]
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                preexec_fn=lambda: _limit(limits))
        timed_out = False
        try:
            out, err = proc.communicate(stdin, timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        _kill_group(proc.pid)  # whatever it left behind in its session
        return RunOutcome(None if timed_out else proc.returncode, out[-4000:], err[-4000:], timed_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
