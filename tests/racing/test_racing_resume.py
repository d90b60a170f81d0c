"""Exact resume of a raced run killed (os._exit, as by kill -9) in the middle of a staged evaluation:
the resumed run records exactly the trials of an uninterrupted one (same candidates, states, values,
examples scored and intermediate values), for a generational (CMA-ES) and a streamed (TPE) strategy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def _write(tmp: Path, name: str, strategy: str) -> Path:
    cfg = {
        "name": name, "output": str(tmp / name),
        "sources": {"base": str(REPO / "zoo/digits/init"),
                    "models": [str(REPO / "zoo/digits/expert_0_4"), str(REPO / "zoo/digits/expert_5_9")]},
        "space": str(REPO / "search_spaces/ps_task_arithmetic.yaml"),
        "strategy": {"name": strategy, "batch_size": 3},  # TPE: 3 in flight, asked at different tell counts
        "objectives": [{"task": str(REPO / "fitness/digits/digits_all.yaml")}],
        "budget": {"evaluations": 14}, "seed": 5,
        "runner": {"type": "local", "threads": 1},
        "racing": {"rule": "bound", "confidence": 0.8},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str, crash: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVOMERGE_CRASH_DECIDE": str(crash), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE / "race_faults.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _trials(run_dir: Path, name: str) -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")
    return [(t.user_attrs["key"], t.state.name, t.values, t.user_attrs.get("examples_scored"),
             dict(t.intermediate_values), t.user_attrs.get("race_references"))
            for t in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("strategy,crashes", [("cma", [9, 23]), ("tpe", [8, 19])])
def test_killed_mid_stage_then_resumed_gives_the_uninterrupted_trials(tmp_path, strategy, crashes):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ref_cfg = _write(tmp_path, f"ref_{strategy}", strategy)
    res = _cli("run", str(ref_cfg), "--no-test")
    assert res.returncode == 0, res.stderr
    expected = _trials(tmp_path / f"ref_{strategy}", f"ref_{strategy}")
    assert any(state == "PRUNED" for _, state, *_ in expected) and len(expected) == 14
    assert len({tuple(t[-1]) for t in expected}) >= 2  # raced against references that changed during the run

    cfg = _write(tmp_path, f"crash_{strategy}", strategy)
    run_dir = tmp_path / f"crash_{strategy}"
    res = _cli("run", str(cfg), "--no-test", crash=crashes[0])
    assert res.returncode == 9, res.stderr  # it really died mid-evaluation
    for n in crashes[1:]:
        res = _cli("resume", str(run_dir), "--no-test", crash=n)
        assert res.returncode == 9, res.stderr
    partial = _trials(run_dir, f"crash_{strategy}")
    assert 0 < len(partial) < 14
    res = _cli("resume", str(run_dir), "--no-test")
    assert res.returncode == 0, res.stderr
    assert _trials(run_dir, f"crash_{strategy}") == expected
