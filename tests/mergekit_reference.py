"""Run mergekit 0.1.5 (the reference) in its own virtual environment, for parity tests.

The environment is ``$EVOMERGE_MERGEKIT_VENV`` (default ``/work/mkvenv``): a
venv with ``pip install mergekit==0.1.5`` (it pins its own torch/transformers,
so it cannot share evomerge's). Tests that need it skip, saying so, when it is
absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

VENV = Path(os.environ.get("EVOMERGE_MERGEKIT_VENV", "/work/mkvenv"))
MERGEKIT_YAML = VENV / "bin" / "mergekit-yaml"


def require_mergekit() -> Path:
    """The mergekit-yaml executable, or skip the test with how to provide it."""
    if not MERGEKIT_YAML.is_file():
        pytest.skip(f"mergekit 0.1.5 reference not installed: no {MERGEKIT_YAML} (create a venv there with "
                    "`pip install mergekit==0.1.5`, or point EVOMERGE_MERGEKIT_VENV at one)")
    return MERGEKIT_YAML


def run_mergekit(config: dict | str, out: Path, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mergekit-yaml config out`` on the CPU; returns the finished process (check ``returncode``)."""
    exe = require_mergekit()
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / f"{out.name}.mergekit.yml"
    cfg.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([str(exe), str(cfg), str(out), "--no-write-model-card"], capture_output=True, text=True,
                          timeout=timeout, env=env)
