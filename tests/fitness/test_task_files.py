"""Task YAML and data files: every bad input fails early with a message naming the file and the key."""

from __future__ import annotations

import numpy as np
import pytest
from fitness_models import write_jsonl

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness import TaskResult, evaluate_all, load_task, load_tasks

GEN = {"name": "g", "kind": "generation"}
ROWS = [{"prompt": "a", "answer": "1"}]


def test_unknown_key_is_a_config_error_naming_file_and_key(write_task):
    path = write_task({**GEN, "max_new_token": 3}, {"train": ROWS})
    with pytest.raises(ConfigError, match=rf"{path.name}: invalid fitness task: key 'max_new_token': Extra inputs"):
        load_task(path)


@pytest.mark.parametrize(("spec", "key"), [
    ({**GEN, "max_new_tokens": 0}, "max_new_tokens"),
    ({**GEN, "extract": {"type": "regex"}}, "extract"),
    ({**GEN, "extract": {"type": "regex", "pattern": "("}}, "extract"),
    ({**GEN, "objective": {"name": "g", "direction": "up"}}, "objective.direction"),
    ({**GEN, "batch_size": "many"}, "batch_size"),
    ({"name": "g", "kind": "summarise"}, "<top level>"),
    ({"name": "h", "kind": "http", "url": "ftp://x"}, "url"),
    ({"name": "c", "kind": "classification", "restrict_logits": True}, "<top level>"),
])
def test_invalid_values_name_the_key(write_task, spec, key):
    path = write_task(spec, {"train": ROWS})
    with pytest.raises(ConfigError, match=rf"{path.name}: invalid fitness task: key '{key}'"):
        load_task(path)


def test_missing_kind_and_data_keys_are_named(write_task):
    with pytest.raises(ConfigError, match="key 'kind' is missing"):
        load_task(write_task({"name": "g"}, {"train": ROWS}))
    with pytest.raises(ConfigError, match="key 'data': Field required"):
        load_task(write_task(GEN))
    with pytest.raises(ConfigError, match="key 'data.train': Field required"):
        load_task(write_task({**GEN, "data": {"test": "x.jsonl"}}))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: g\nkind: generation\ndata: {train: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line \d+"):
        load_task(path)
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: a fitness task must be a YAML mapping"):
        load_task(path)
    with pytest.raises(ConfigError, match=r"fitness task file not found: .*nope\.yaml"):
        load_task(tmp_path / "nope.yaml")


def test_missing_or_empty_data_file_is_a_fitness_error_naming_the_file(write_task, tmp_path):
    with pytest.raises(FitnessError, match=r"data file not found: .*missing\.jsonl"):
        load_task(write_task({**GEN, "data": {"train": "missing.jsonl"}}))
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(FitnessError, match=r"data file is empty: .*empty\.jsonl"):
        load_task(write_task({**GEN, "data": {"train": "empty.jsonl"}}))


@pytest.mark.parametrize(("line", "msg"), [
    ('{"prompt": "a"}', r"bad\.jsonl:2: missing key 'answer'"),
    ('{"prompt": 3, "answer": "1"}', r"bad\.jsonl:2: key 'prompt' must be str, got int"),
    ('{"prompt": "a", "answer": true}', r"bad\.jsonl:2: key 'answer' must be str/int/float, got bool"),
    ('{"prompt": "a", ', r"bad\.jsonl:2: not valid JSON"),
    ('["a", "1"]', r"bad\.jsonl:2: expected a JSON object, got list"),
])
def test_malformed_jsonl_names_file_and_line(write_task, tmp_path, line, msg):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "answer": "1"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(FitnessError, match=msg):
        load_task(write_task({**GEN, "data": {"train": "bad.jsonl"}}))


def test_unknown_split_names_the_available_ones(write_task, tokenizer, random_llama):
    task = load_task(write_task(GEN, {"train": ROWS, "test": ROWS}))
    with pytest.raises(FitnessError, match="task 'g' has no split 'validation'; it has train, test"):
        task.evaluate(random_llama, tokenizer, split="validation")


def test_objective_defaults_to_task_name_and_kind_direction(write_task):
    g = load_task(write_task(GEN, {"train": ROWS}, name="g"))
    p = load_task(write_task({"name": "p", "kind": "perplexity"}, {"train": [{"text": "a b"}]}, name="p"))
    assert (g.objective_name, g.direction) == ("g", "maximize")
    assert (p.objective_name, p.direction) == ("p", "minimize")


def test_load_tasks_and_evaluate_all(write_task, tmp_path, tokenizer, random_llama):
    a = write_task({**GEN, "name": "a", "max_new_tokens": 2}, {"train": ROWS}, name="a")
    b = write_task({"name": "b", "kind": "perplexity"}, {"train": [{"text": "a b c"}]}, name="b")
    tasks = load_tasks([a, b])
    out = evaluate_all(tasks, random_llama, tokenizer, "train")
    assert list(out) == ["a", "b"]
    assert all(isinstance(r, TaskResult) and r.per_example.dtype == np.float64 for r in out.values())
    c = write_task({**GEN, "name": "c", "objective": {"name": "a"}}, {"train": ROWS}, name="c")
    with pytest.raises(ConfigError, match="tasks 'a' and 'c' both report objective 'a'"):
        load_tasks([a, c])


def test_data_paths_resolve_relative_to_the_yaml(tmp_path, tokenizer, random_llama):
    sub = tmp_path / "tasks"
    (sub / "data").mkdir(parents=True)
    write_jsonl(sub / "data" / "t.jsonl", ROWS)
    (sub / "t.yaml").write_text("name: t\nkind: generation\ndata: {train: data/t.jsonl}\n", encoding="utf-8")
    assert load_task(sub / "t.yaml").evaluate(random_llama, tokenizer).n == 1


def test_task_result_checks_its_length():
    with pytest.raises(FitnessError, match="task 't': 2 per-example scores for n=3"):
        TaskResult("t", "train", {"t": 1.0}, np.ones(2), n=3, seconds=0.0)


def test_the_zoo_task_files_load_as_they_are_written(tmp_path):
    """The tinylm and digits YAML that evomerge.zoo writes are valid task files of the right kinds."""
    from evomerge.fitness import FitnessTask
    from evomerge.zoo import tasks as zoo_tasks  # our own module: an import error must fail, not skip

    splits = zoo_tasks.tinylm_splits({"train": 3, "validation": 2, "test": 2}, seed=0)
    tiny = [load_task(p) for p in zoo_tasks.write_tinylm_tasks(tmp_path / "tinylm", splits)]
    digits = [load_task(p) for p in zoo_tasks.write_digits_tasks(tmp_path / "digits")]
    assert {t.kind for t in tiny} == {"generation"} and {t.kind for t in digits} == {"classification"}
    assert all(isinstance(t, FitnessTask) for t in tiny + digits)
    assert [len(tiny[0].examples[s]) for s in ("train", "validation", "test")] == [3, 2, 2]
