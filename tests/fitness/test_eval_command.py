"""`evomerge eval MODEL TASK...`: one checkpoint scored with the search's code, as a table or JSON."""

from __future__ import annotations

import json
import shutil

import pytest
from fitness_models import bigram_table, make_table_llama, walk
from typer.testing import CliRunner

from evomerge.cli import app

TRANSITIONS = {"a": "1", "b": "2", "2": "3", "c": "4"}
ROWS = [{"prompt": "what is a", "answer": "1"}, {"prompt": "b", "answer": "2 3"}, {"prompt": "c", "answer": "5"}]


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    folder = tmp_path / "ckpt"
    make_table_llama(bigram_table(TRANSITIONS)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_eval_prints_each_tasks_objective_on_the_chosen_split(checkpoint, write_task):
    gen = write_task({"name": "gen", "kind": "generation", "max_new_tokens": 4},
                     {"train": ROWS[:1], "test": ROWS}, name="gen")
    mc = write_task({"name": "mc", "kind": "multiple_choice"},
                    {"train": [{"prompt": "a", "choices": ["1", "2"], "answer": 0}],
                     "test": [{"prompt": "a", "choices": ["2", "1"], "answer": 1},
                              {"prompt": "b", "choices": ["2", "4"], "answer": 1}]}, name="mc")
    res = CliRunner().invoke(app, ["eval", str(checkpoint), str(gen), str(mc), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["split"] == "test" and report["source"] == "checkpoint"
    # by hand: the bigram walk answers "1", "2 3", "4"; the likelier choice follows the table
    assert [" ".join(walk(TRANSITIONS, r["prompt"].split()[-1], 4)) for r in ROWS] == ["1", "2 3", "4"]
    assert report["tasks"]["gen"] == {**report["tasks"]["gen"], "objectives": {"gen": 2 / 3}, "n": 3,
                                      "per_example": [1.0, 1.0, 0.0]}
    assert report["tasks"]["mc"]["per_example"] == [1.0, 0.0]
    table = CliRunner().invoke(app, ["eval", str(checkpoint), str(gen), "--split", "train"])
    assert table.exit_code == 0 and "gen" in table.stdout and "1.0000" in table.stdout


def test_eval_reads_an_exported_trials_model_folder(checkpoint, write_task, tmp_path):
    trial = tmp_path / "export" / "trial-00003"
    trial.mkdir(parents=True)
    shutil.copytree(checkpoint, trial / "model")
    gen = write_task({"name": "gen", "kind": "generation", "max_new_tokens": 4}, {"train": ROWS})
    res = CliRunner().invoke(app, ["eval", str(trial), str(gen), "--split", "train", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["model"] == str(trial / "model") and report["source"] == "exported trial (model/)"
    assert report["tasks"]["gen"]["per_example"] == [1.0, 1.0, 0.0]


def test_eval_refuses_a_folder_that_is_no_model_and_a_missing_chat_template(checkpoint, write_task, tmp_path):
    gen = write_task({"name": "gen", "kind": "generation"}, {"train": ROWS})
    res = CliRunner().invoke(app, ["eval", str(tmp_path), str(gen)])
    assert res.exit_code != 0 and "neither a checkpoint folder" in str(res.exception)
    chat = write_task({"name": "chat", "kind": "generation", "chat_template": True}, {"train": ROWS}, name="chat")
    res = CliRunner().invoke(app, ["eval", str(checkpoint), str(chat), "--split", "train"])
    assert res.exit_code != 0 and "has no chat template" in str(res.exception)
