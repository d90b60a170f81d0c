"""A task asking for the tokenizer's chat template is checked when the study loads its tasks.

Before, the check ran when the workers started: after the run folder was written. Now a source
whose tokenizer has no template stops ``evomerge run`` in preflight, naming the task, the key and
the source, with nothing written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evomerge.errors import FitnessError
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "zoo" / "tinylm"
DATA = REPO / "fitness" / "tinylm" / "math_a.train.jsonl"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _task(tmp: Path, spec: dict) -> str:
    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def _generation(tmp: Path, **extra) -> str:
    return _task(tmp, {"name": "chatty", "kind": "generation", "data": {"train": str(DATA)}, "max_new_tokens": 2,
                       **extra})


def _config(tmp: Path, task: str, base: Path = ZOO / "base", **sources) -> dict:
    return {"name": "r", "sources": {"base": str(base), "models": [str(ZOO / m) for m in ("math_a", "lang_b")],
                                     **sources},
            "space": str(REPO / "search_spaces" / "ps_task_arithmetic.yaml"), "strategy": {"name": "cma"},
            "objectives": [{"task": task}], "budget": {"evaluations": 4}, "output": str(tmp / "r"),
            "runner": {"type": "local", "threads": 1}, "test_split": None}


def _refused(tmp: Path, data: dict, match: str) -> None:
    with pytest.raises(FitnessError, match=match):
        Study.create(RunConfig.from_dict(data))
    assert not (tmp / "r").exists()  # nothing written: no config.yaml, no study.db, no folder


def test_evomerge_run_stops_before_the_run_folder_naming_task_key_and_source(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, _generation(tmp_path, chat_template=True))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "evomerge", "run", str(cfg), "--no-test"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"task 'chatty' asks for chat_template: true, but the tokenizer of {ZOO / 'base'} has no chat " \
           "template" in res.stderr
    assert not (tmp_path / "r").exists()


def test_multiple_choice_and_lm_eval_tasks_are_checked_too(tmp_path: Path) -> None:
    mc_data = tmp_path / "mc.jsonl"
    mc_data.write_text('{"prompt": "1 plus 1", "choices": ["2", "3"], "answer": 0}\n', encoding="utf-8")
    mc = _task(tmp_path, {"name": "mc", "kind": "multiple_choice", "data": {"train": str(mc_data)},
                          "chat_template": True})
    _refused(tmp_path, _config(tmp_path, mc), r"task 'mc' asks for chat_template: true, but the tokenizer of")
    lm = _task(tmp_path, {"name": "lm", "kind": "lm_eval", "task": "hellaswag", "apply_chat_template": True})
    _refused(tmp_path, _config(tmp_path, lm), r"task 'lm' asks for apply_chat_template: true, but the tokenizer "
                                              r"of .*base has no chat template")


def test_a_source_with_a_template_or_a_named_template_passes(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    base = tmp_path / "chat-base"
    shutil.copytree(ZOO / "base", base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHATML
    tok.save_pretrained(base)
    Study.create(RunConfig.from_dict(_config(tmp_path, _generation(tmp_path, chat_template=True), base=base))).close()
    shutil.rmtree(tmp_path / "r")
    # a named template needs nothing of the tokenizer; the tokenizer that scores is the one `tokenizer:` names
    Study.create(RunConfig.from_dict(_config(tmp_path, _generation(tmp_path, chat_template="chatml")))).close()
    shutil.rmtree(tmp_path / "r")
    _refused(tmp_path, _config(tmp_path, _generation(tmp_path, chat_template=True), base=base,
                               tokenizer={"source": str(ZOO / "math_a")}),
             rf"the tokenizer of {ZOO / 'math_a'} has no chat template")


def test_the_resolved_config_keeps_the_sources_tokenizer(tmp_path: Path) -> None:
    # Study.create scores the resolved config: sources.tokenizer was dropped there (so a run's candidates never
    # carried the merged-vocabulary settings); a model named as the source is made absolute like the sources
    data = _config(tmp_path, _generation(tmp_path), tokenizer={"source": "zoo/tinylm/math_a"})
    resolved = RunConfig.from_dict(data).resolved()
    assert resolved.sources.tokenizer.source == str(Path("zoo/tinylm/math_a").resolve())
    assert RunConfig.from_dict({**data, "sources": {**data["sources"], "tokenizer": "union"}}).resolved() \
        .sources.tokenizer.source == "union"
