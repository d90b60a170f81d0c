"""Defects 8 and 6 (a): a config refused for a bad source had already written config.yaml and study.db
(so the fixed config was then refused with a diff), and what could be checked without scoring was
found only by spending the budget (scorer down, data-flow over an unsupported architecture, sources
that do not line up, a malformed task file).

Now a run is validated and preflighted before its folder exists: the refusal leaves nothing behind,
and the fixed config runs in the same place.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from safety_helpers import REPO, cli, error_line

from evomerge.errors import CheckpointError, ConfigError, EvomergeError, FitnessError, MergeError
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

TASK = str(REPO / "fitness" / "tinylm" / "math_a.yaml")  # parses without a tokenizer; never scored here


def ps_config(tmp: Path, base: Path, experts: list, *, name: str = "r", task: str = TASK, **over) -> dict:
    return {"name": name, "sources": {"base": str(base), "models": [str(e) for e in experts]},
            "space": str(REPO / "search_spaces" / "ps_task_arithmetic.yaml"), "strategy": {"name": "cma"},
            "objectives": [{"task": task}], "budget": {"evaluations": 4}, "output": str(tmp / name),
            "runner": {"type": "local", "threads": 1}, "test_split": None, **over}


def refused(tmp: Path, data: dict, error: type[EvomergeError], match: str) -> None:
    with pytest.raises(error, match=match):
        Study.create(RunConfig.from_dict(data))
    assert not (tmp / data["name"]).exists()  # nothing written: no config.yaml, no study.db, no folder


def test_a_missing_source_leaves_no_folder_and_the_fixed_config_runs_there(tmp: Path, family) -> None:
    base, experts = family
    bad = ps_config(tmp, base, [*experts[:2], tmp / "no-such-expert"])
    cfg = tmp / "r.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    res = cli("run", str(cfg), "--no-test")
    assert res.returncode == 2
    assert "no-such-expert" in error_line(res)
    assert not (tmp / "r").exists()
    study = Study.create(RunConfig.from_dict(ps_config(tmp, base, experts)))  # fixed: not refused with a diff
    assert (tmp / "r" / "config.yaml").is_file()
    study.close()


def test_sources_that_do_not_line_up_are_refused_before_the_budget(tmp: Path, family) -> None:
    from evomerge.testing import save_tiny_llama, tiny_llama_config

    base, experts = family
    wide = save_tiny_llama(tmp / "wide", seed=5, config=tiny_llama_config(hidden_size=64, intermediate_size=96))
    refused(tmp, ps_config(tmp, base, [experts[0], wide]), (CheckpointError, ConfigError, MergeError), "shape")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_http_scorer_is_refused_before_the_budget(tmp: Path, family) -> None:
    base, experts = family
    url = f"http://127.0.0.1:{closed_port()}/score"
    task = tmp / "judge.yaml"
    task.write_text(yaml.safe_dump({"name": "judge", "kind": "http", "url": url, "send": "checkpoint"}))
    refused(tmp, ps_config(tmp, base, experts, task=str(task)), FitnessError,
            rf"task 'judge': the scorer at {url} does not answer")


def test_a_data_flow_space_over_an_unsupported_architecture_is_refused(tmp: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    models = []
    for i in range(2):
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32)
        GPT2LMHeadModel(cfg).save_pretrained(tmp / f"gpt2-{i}")
        models.append(tmp / f"gpt2-{i}")
    data = ps_config(tmp, models[0], models[1:], space={"kind": "dfs", "repeats": 1})
    data["sources"] = {"models": [str(m) for m in models]}
    refused(tmp, data, ConfigError, r"data-flow merges are not supported for model_type 'gpt2'")


def test_a_malformed_task_file_is_refused_naming_the_key(tmp: Path, family) -> None:
    base, experts = family
    task = tmp / "typo.yaml"
    task.write_text(Path(TASK).read_text().replace("max_new_tokens", "max_new_token"))
    refused(tmp, ps_config(tmp, base, experts, task=str(task)), EvomergeError, "max_new_token")


def test_an_unknown_lm_eval_task_name_is_refused(tmp: Path, family) -> None:
    pytest.importorskip("lm_eval")  # the check needs lm-eval's task registry; absent, scoring says how to install
    base, experts = family
    task = tmp / "lm.yaml"
    task.write_text(yaml.safe_dump({"name": "lm", "kind": "lm_eval", "task": "hellaswagg"}))
    refused(tmp, ps_config(tmp, base, experts, task=str(task)), FitnessError, "lm-eval has no task 'hellaswagg'")
