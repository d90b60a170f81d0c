"""Wall time of `evomerge --help` (and other light commands), this tree against an earlier commit.

    python bench/cli_startup.py                      # this tree only
    python bench/cli_startup.py --before 25ed113     # also that commit (exported with git archive), side by side

Each command runs ``--runs`` times in a fresh interpreter; the table shows the median and the minimum
wall time, and whether torch was imported (read from ``python -X importtime``). The commands should
answer without importing torch: `--help` has a 0.5 s goal on an idle 2-core machine. `plan` and
`recipe check` run on a Llama-2-7B-shaped family (base + 2 fine-tunes, bf16) written as header-only
sparse files (no weights, no disk) into a temporary folder.
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
LLAMA_7B = dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)


def header_only_commands(into: Path) -> list[tuple[str, list[str]]]:
    """(label, args) of `plan` and `recipe check` on a header-only 7B family written under ``into``."""
    import yaml

    sys.path.insert(0, str(REPO))
    from evomerge.testing import llama_shapes, write_header_only_checkpoint

    shapes = llama_shapes(**LLAMA_7B)
    base, *models = (into / name for name in ("base", "chat", "math"))
    for folder in (base, *models):
        write_header_only_checkpoint(folder, shapes, config={"model_type": "llama", "vocab_size": 32000})
    config, recipe = into / "run.yaml", into / "ties.yaml"
    config.write_text(yaml.safe_dump({
        "name": "plan7b", "sources": {"base": str(base), "models": [str(m) for m in models]}, "space": "ties",
        "objectives": [{"name": "score", "direction": "maximize"}], "budget": {"evaluations": 10},
        "runner": {"device": "cuda", "storage_dtype": "bfloat16"}}))
    recipe.write_text(yaml.safe_dump({
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models],
        "base_model": str(base), "merge_method": "ties", "dtype": "bfloat16"}))
    return [("plan 7B --device-memory", ["plan", str(config), "--device-memory", "80GiB", "--host-memory", "512GiB"]),
            ("recipe check 7B", ["recipe", "check", str(recipe)])]


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
        res = subprocess.run([sys.executable, "-P", "-m", "evomerge", *args], env=env, capture_output=True,
                             text=True, check=False)
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:  # a command that fails fast would otherwise look fast
            raise SystemExit(f"evomerge {' '.join(args)} (from {src}) exited {res.returncode}: "
                             f"{res.stderr.strip().splitlines()[-1:]}")
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
        data = Path(tmp) / "models"
        commands = [(" ".join(c), c) for c in COMMANDS] + header_only_commands(data)
        print(f"{'command':<34}{'tree':<14}{'median s':>10}{'min s':>9}  torch imported")
        for name, command in commands:
            for label, src in trees:
                median, best, torch = measure(src, command, args.runs)
                print(f"{'evomerge ' + name:<34}{label:<14}{median:>10.2f}{best:>9.2f}  "
                      f"{'yes' if torch else 'no'}")
    print(f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.runs} runs each)")


if __name__ == "__main__":
    main()
