"""Helpers shared by the safety tests: a function-runner config and the CLI as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def write_config(tmp: Path, name: str, *, target: str = "scorers:slow_sphere", evaluations: int = 40,
                 strategy: str = "cma", **extra: object) -> Path:
    cfg = {
        "name": name,
        "space": {"kind": "box", "dim": 3},
        "strategy": {"name": strategy, "batch_size": 4},
        "objectives": [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": evaluations},
        "seed": 3,
        "output": str(tmp / name),
        "runner": {"type": "function", "target": target},
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this folder and the repository first on PYTHONPATH (plus any given)."""
    path = os.pathsep.join([extra.pop("PYTHONPATH", ""), str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli(*args: str, cwd: Path | None = None, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    """``evomerge ARGS`` in a fresh process (the entry point in scorers.py, so function targets import)."""
    return subprocess.run([sys.executable, str(HERE / "scorers.py"), *args], capture_output=True, text=True,
                          env=env(**extra), timeout=timeout, cwd=cwd)


def start(*args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "scorers.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(**extra))


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one-line error a refused command printed (no traceback)."""
    text = res.stderr.strip()
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert lines, text
    return lines[0]
