"""Wall time of `evomerge --help` (and other light commands), this tree against an earlier commit.

    python bench/cli_startup.py                      # this tree only
    python bench/cli_startup.py --before 25ed113     # also that commit (exported with git archive), side by side

Each command runs ``--runs`` times in a fresh interpreter; the table shows the median and the minimum
wall time, and whether torch was imported (read from ``python -X importtime``). The commands should
answer without importing torch: `--help` has a 0.5 s goal on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["methods"], ["run", "--help"]]


def export_commit(ref: str, into: Path) -> Path:
    """The ``evomerge`` package of commit ``ref`` under ``into`` (read from git, the work tree untouched)."""
    archive = into / "src.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "evomerge"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(src: Path, args: list[str], runs: int) -> tuple[float, float, bool]:
    """(median s, min s, torch imported) of ``python -m evomerge ARGS`` importing evomerge from ``src``.

    ``-P``: the current directory is not put on the path (it may hold another evomerge).
    """
    env = {**os.environ, "PYTHONPATH": str(src)}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-P", "-m", "evomerge", *args], env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    trace = subprocess.run([sys.executable, "-P", "-X", "importtime", "-m", "evomerge", *args], env=env,
                           capture_output=True, text=True, check=False).stderr
    torch = any(line.rsplit("|", 1)[-1].strip() == "torch" for line in trace.splitlines())
    return statistics.median(times), min(times), torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git ref to compare with (e.g. the commit before a change)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = [("this tree", REPO)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            trees.insert(0, (args.before, export_commit(args.before, Path(tmp))))
        print(f"{'command':<22}{'tree':<14}{'median s':>10}{'min s':>9}  torch imported")
        for command in COMMANDS:
            for label, src in trees:
                median, best, torch = measure(src, command, args.runs)
                print(f"{'evomerge ' + ' '.join(command):<22}{label:<14}{median:>10.2f}{best:>9.2f}  "
                      f"{'yes' if torch else 'no'}")
    print(f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.runs} runs each)")


if __name__ == "__main__":
    main()
