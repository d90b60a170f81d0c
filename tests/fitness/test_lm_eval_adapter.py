"""The lm-evaluation-harness adapter: local task YAMLs scored through lm-eval, checked against our own tasks.

lm-eval is an optional extra (it pulls in datasets, pyarrow, pandas…); without
it these tests are skipped and only the missing-package error is checked.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import yaml
from fitness_models import bigram_table, make_table_llama, write_jsonl

from evomerge.errors import FitnessError
from evomerge.fitness import load_task

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(not HAVE_LM_EVAL, reason="lm-eval is not installed (optional extra: "
                                                            "pip install lm-eval)")

MC_ROWS = [
    {"prompt": "what is", "choices": ["a", "b c", "the x y"], "answer": 1},
    {"prompt": "a plus b is", "choices": ["3", "7"], "answer": 0},
    {"prompt": "x", "choices": ["y", "what is the", "1 2 3 4", "c"], "answer": 3},
    {"prompt": "the 7", "choices": ["is", "plus"], "answer": 1},
]
GEN_ROWS = [{"prompt": "what is a", "answer": "1"}, {"prompt": "b", "answer": "2 3"}, {"prompt": "c", "answer": "9"}]


def _lm_eval_yaml(tmp_path, name: str, rows: list[dict], body: dict) -> str:
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", **body}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return f"{name}.yaml"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


@needs_lm_eval
def test_multiple_choice_through_lm_eval_equals_our_multiple_choice(write_task, tmp_path, tokenizer, random_llama,
                                                                     offline):
    ref = _lm_eval_yaml(tmp_path, "evomerge_tiny_mc", MC_ROWS, {
        "output_type": "multiple_choice", "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]})
    res = load_task(write_task({"name": "lm", "kind": "lm_eval", "data": {"train": ref}}, name="lm")).evaluate(
        random_llama, tokenizer)
    ours = load_task(write_task({"name": "mc", "kind": "multiple_choice"}, {"train": MC_ROWS}, name="mc")).evaluate(
        random_llama, tokenizer)
    np.testing.assert_array_equal(res.per_example, ours.per_example)
    assert res.objectives["lm"] == pytest.approx(ours.objectives["mc"])


@needs_lm_eval
def test_generate_until_through_lm_eval_equals_our_generation(write_task, tmp_path, tokenizer, offline):
    model = make_table_llama(bigram_table({"a": "1", "b": "2", "2": "3", "c": "4", "4": "5"}))
    ref = _lm_eval_yaml(tmp_path, "evomerge_tiny_gen", GEN_ROWS, {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["</s>"], "max_gen_toks": 3, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}]})
    res = load_task(write_task({"name": "lm", "kind": "lm_eval", "task": ref, "metric": "exact_match"},
                               name="lm")).evaluate(model, tokenizer)
    np.testing.assert_array_equal(res.per_example, [1.0, 1.0, 0.0])  # "1", "2 3", "4 5" vs "9"
    assert res.objectives["lm"] == pytest.approx(2 / 3)


@pytest.mark.skipif(HAVE_LM_EVAL, reason="checks the message shown when lm-eval is missing")
def test_missing_lm_eval_is_a_clear_fitness_error(write_task, tmp_path, tokenizer, random_llama):
    task = load_task(write_task({"name": "lm", "kind": "lm_eval", "task": "hellaswag"}))
    with pytest.raises(FitnessError, match=r"task 'lm': kind: lm_eval needs lm-evaluation-harness: pip install"):
        task.evaluate(random_llama, tokenizer)


def test_lm_eval_spec_needs_exactly_one_of_task_and_data(write_task):
    from evomerge.errors import ConfigError

    with pytest.raises(ConfigError, match="give exactly one of `task`"):
        load_task(write_task({"name": "lm", "kind": "lm_eval"}))
