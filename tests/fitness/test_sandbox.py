"""The code-execution sandbox: limits hold, runaway programs are stopped, nothing escapes its directory.

Every program here is bounded by itself too (a fork loop of at most 300 forks, sleepers
that end), so a broken sandbox cannot take the shared test machine down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from evomerge.fitness.sandbox import Limits, run_python

FORK_LOOP = """
import os, time
print(os.getcwd(), flush=True)
n = 0
for _ in range(300):
    try:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
    except OSError:
        break
print(n, flush=True)
time.sleep(20)
"""


def _survivors(marker: str) -> list[int]:
    """Processes whose command line names the sandbox folder ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_correct_program_passes_and_its_output_comes_back():
    out = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n")
    assert out.passed and out.stdout == "ok\n"


def test_an_infinite_loop_is_stopped_by_the_cpu_limit():
    t0 = time.monotonic()
    out = run_python("while True:\n    pass\n", Limits(cpu_seconds=1, wall_seconds=60))
    assert not out.passed and not out.timed_out and out.returncode != 0  # SIGXCPU, not the wall clock
    assert time.monotonic() - t0 < 30


def test_a_sleeping_loop_is_stopped_by_the_wall_clock():
    t0 = time.monotonic()
    out = run_python("import time\nwhile True:\n    time.sleep(1)\n", Limits(wall_seconds=1.5))
    assert out.timed_out and not out.passed
    assert time.monotonic() - t0 < 10


def test_a_fork_bomb_is_refused_by_the_interpreter_guard():
    out = run_python("import os\nwhile True:\n    os.fork()\n")
    assert not out.passed and "os.fork is not allowed" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC holds for the nobody user the sandbox becomes as root")
def test_a_fork_bomb_is_capped_by_the_process_limit_and_its_tree_killed_without_the_guard():
    t0 = time.monotonic()
    out = run_python(FORK_LOOP, Limits(processes=8, wall_seconds=3), audit_hook=False)
    folder, *rest = out.stdout.split()
    assert rest and int(rest[0]) < 8  # the 8th process (counting the program itself) was refused
    assert out.timed_out and time.monotonic() - t0 < 15
    deadline = time.monotonic() + 5
    while _survivors(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _survivors(folder) == []  # the whole tree is gone, not only the first process


def test_writing_outside_the_temporary_folder_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    for code in (f"open({str(target)!r}, 'w').write('x')\n",
                 f"import os\nos.rename('solution.py', {str(target)!r})\n",
                 f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n"):
        out = run_python(code)
        assert not out.passed and "not allowed" in out.stderr
    assert not target.exists()
    assert run_python("open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read())\n").stdout == "x\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the sandbox drops to nobody, who owns nothing here")
def test_writing_outside_is_refused_by_the_os_without_the_guard(tmp_path):
    target = tmp_path / "escaped.txt"
    out = run_python(f"open({str(target)!r}, 'w').write('x')\n", audit_hook=False)
    assert not out.passed and "PermissionError" in out.stderr
    assert not target.exists()


def test_no_network():
    out = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n")
    assert not out.passed and "not allowed" in out.stderr
