"""MAP-family and MM-MO runs killed at record and checkpoint points resume to the uninterrupted run's trials."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib puts no test folder on sys.path
from test_resume import cli, crash_then_resume, trials, write_config

ZDT1 = {"target": "faults:slow_zdt1", "dim": 2,
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}]}


@pytest.mark.parametrize(("strategy", "mid_last_batch"), [("map", "record:5"), ("nested-map", "record:1"),
                                                           ("bayes-map", "record:3")])
def test_map_killed_mid_design_and_mid_front_resumes_to_the_uninterrupted_trials(tmp_path, strategy, mid_last_batch):
    options = {"population": 20, "generations": 20}
    ref_cfg = write_config(tmp_path, "ref", strategy=strategy, evaluations=100, options=options, **ZDT1)
    res = cli("run", str(ref_cfg), "--no-test")
    assert res.returncode == 0, res.stderr
    reference = trials(tmp_path / "ref", "ref")
    assert 12 < len(reference) < 100  # the strategy finished by itself, well inside the budget

    cfg = write_config(tmp_path, "killed", strategy=strategy, evaluations=100, options=options, **ZDT1)
    # mid-design, between the design's tell and its checkpoint, then the same in the last batch (map: the front;
    # nested-map with two tasks: the single model its 2-D MAP picks)
    resumed = crash_then_resume(cfg, tmp_path / "killed", ["record:3", "checkpoint:1", mid_last_batch, "checkpoint:1"])
    keys = [k for k, _, _ in resumed]
    assert len(keys) == len(set(keys)), "an evaluation was recorded twice"
    assert resumed == reference
    res = cli("resume", str(tmp_path / "killed"), "--no-test")  # a finished run stays finished
    assert res.returncode == 0 and trials(tmp_path / "killed", "killed") == reference


def test_mm_mo_killed_mid_batch_and_before_a_checkpoint_resumes_to_the_uninterrupted_trials(tmp_path):
    ref_cfg = write_config(tmp_path, "ref", strategy="mm-mo", evaluations=18, **ZDT1)
    res = cli("run", str(ref_cfg), "--no-test")
    assert res.returncode == 0, res.stderr
    reference = trials(tmp_path / "ref", "ref")
    assert len(reference) == 18

    cfg = write_config(tmp_path, "killed", strategy="mm-mo", evaluations=18, **ZDT1)
    # in the random design, right after the first GP batch is told (before its checkpoint), mid second batch
    resumed = crash_then_resume(cfg, tmp_path / "killed", ["record:4", "checkpoint:2", "record:3"])
    assert len({k for k, _, _ in resumed}) == len(resumed)
    assert resumed == reference
