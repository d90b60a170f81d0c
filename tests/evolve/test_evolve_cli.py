"""`evomerge evolve` end to end: config → evolution → best/ checkpoint + summary; refusal and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.evolve.flat import flatten_checkpoint
from evomerge.evolve.problem import ModelTasksProblem

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, **changes) -> Path:
    config = {
        "name": "m2n2-small", "algorithm": "m2n2",
        "options": {"archive_size": 4, "mutation_std": 0.01},
        "init": {"models": [str(ROOT / f"zoo/digits/random/init_0{i}") for i in range(4)]},
        "tasks": [str(ROOT / "fitness/digits/digits_all.yaml")],
        "budget": {"children": 80}, "seed": 3, "threads": 1, "output": str(tmp_path / "run"),
        **changes,
    }
    path = tmp_path / f"evolve-{len(list(tmp_path.glob('evolve-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_m2n2_run_exports_the_best_model_with_its_scores(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evolve", str(write_config(tmp_path))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["children"] == 80 and summary["failed"] == 0
    starts = [v["train"]["digits_all"] for k, v in summary["models"].items() if k.startswith("start:")]
    evolved = summary["models"]["evolved"]
    assert len(starts) == 4 and evolved["train"]["digits_all"] > max(starts)  # 76 children beat the random inits
    # best/ is a real checkpoint whose own scores are the summary's
    problem = ModelTasksProblem(run / "best", [ROOT / "fitness/digits/digits_all.yaml"])
    genome, _ = flatten_checkpoint(run / "best")
    assert problem.score(genome, split="test").objectives["digits_all"] == evolved["test"]["digits_all"]

    again = CliRunner().invoke(app, ["evolve", "--resume", str(run)])  # finished: nothing is evaluated again
    assert again.exit_code == 0, again.output
    assert json.loads((run / "summary.json").read_text())["children"] == 80
    assert np.array_equal(flatten_checkpoint(run / "best")[0], genome)


def test_a_changed_config_is_refused_with_a_diff(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["evolve", str(write_config(tmp_path, budget={"children": 25}))]).exit_code == 0
    result = CliRunner().invoke(app, ["evolve", str(write_config(tmp_path, budget={"children": 25}, seed=4))])
    assert result.exit_code != 0
    assert "another config" in str(result.exception) and "+seed: 4" in str(result.exception)


def test_unknown_option_and_bad_init_are_config_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evolve", str(write_config(tmp_path, options={"archive": 4}))])
    assert "no option(s) ['archive']" in str(result.exception) and "archive_size" in str(result.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["evolve", str(write_config(tmp_path, init={"models": [str(empty)]}))])
    assert "neither a model folder nor a folder of model folders" in str(result.exception)


def test_cycleqd_run_on_tinylm(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, name="cqd", algorithm="cycleqd", options={},
        init={"base": str(ROOT / "zoo/tinylm/base"),
              "models": [str(ROOT / f"zoo/tinylm/{m}") for m in ("math_a", "lang_b", "list_a")]},
        tasks=[str(ROOT / f"fitness/tinylm/{m}.yaml") for m in ("math_a", "lang_b", "list_a")],
        budget={"children": 5}, test_split=None)
    result = CliRunner().invoke(app, ["evolve", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["children"] == 5 and set(summary["models"]) == {"evolved", "start: math_a", "start: lang_b",
                                                                   "start: list_a"}
    assert (tmp_path / "run" / "best" / "tokenizer.json").is_file()



def test_ctrl_c_stops_after_the_current_child_and_resume_finishes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from evomerge.evolve.driver import load_snapshot

    config = write_config(tmp_path, budget={"children": 4000}, snapshot_every_s=3600)
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "evolve", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    journal = tmp_path / "run" / "journal.bin"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or journal.stat().st_size < 50_000):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "children are saved" in err and "--resume" in err
    done = load_snapshot(tmp_path / "run")["algorithm"]["n_told"]
    assert 0 < done < 4000  # stopped mid-run, the state saved at the stop
    assert not (tmp_path / "run" / "summary.json").exists()

    result = CliRunner().invoke(app, ["evolve", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["children"] == 4000
