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


@pytest.mark.slow  # real processes, about 2 minutes per strategy on 2 cores; the in-process check below is fast
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


@pytest.mark.parametrize("strategy", ["cma", "tpe"])
def test_interrupted_mid_stage_in_process_then_resumed_gives_the_uninterrupted_trials(tmp_path, strategy, monkeypatch):
    """The same check in one process: Ctrl-C (KeyboardInterrupt) raised at a racing decision, then a resume."""
    from evomerge.racing import request
    from evomerge.study.config import RunConfig
    from evomerge.study.study import Study

    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def run(name: str, stop_at: int = 0) -> None:
        cfg = RunConfig.load(_write(tmp_path, name, strategy))
        original, calls = request.RaceRequest.decide, {"n": 0}

        def decide(self, *a, **k):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return original(self, *a, **k)

        monkeypatch.setattr(request.RaceRequest, "decide", decide)
        study = Study.create(cfg)
        try:
            assert study.run().stopped_early is bool(stop_at)
        finally:
            study.close()
        monkeypatch.setattr(request.RaceRequest, "decide", original)
        if stop_at:
            study = Study.open(tmp_path / name)
            try:
                study.run()
            finally:
                study.close()

    run("ref")
    run("cut", stop_at=17)
    assert _trials(tmp_path / "cut", "cut") == _trials(tmp_path / "ref", "ref")
