"""``kind: python`` tasks and the two shipped scorers (language constraint, code execution)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from fitness_models import bigram_table, make_table_llama

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness import load_task
from evomerge.fitness.generation import Generations
from evomerge.fitness.scorers.code import extract_code, pass_at_1
from evomerge.fitness.scorers.language import answer_in_language, detect_language

REPO = Path(__file__).resolve().parents[2]
TRANSITIONS = {"a": "1", "b": "2", "2": "3"}
ROWS = [{"prompt": "what is a", "answer": "1"}, {"prompt": "b", "answer": "2 3"}, {"prompt": "c", "answer": "x"}]

SCORER = '''
CALLS = []

def exact(generations, examples, bonus=0.0):
    CALLS.append(len(generations))
    return [float(g == e["answer"]) + bonus for g, e in zip(generations, examples)]

def choose(loglikelihoods, examples):
    return [float(max(range(len(ll)), key=ll.__getitem__) == e["answer"]) for ll, e in zip(loglikelihoods, examples)]

def broken(generations, examples):
    return {}["no such key"]

def short(generations, examples):
    return [1.0]
'''


@pytest.fixture
def scorer_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_scorer.py"
    path.write_text(SCORER, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def table_model():
    return make_table_llama(bigram_table(TRANSITIONS))


def _task(write_task, fn: str, **extra):
    return load_task(write_task({"name": "py", "kind": "python", "function": fn, "max_new_tokens": 4, **extra},
                                {"train": ROWS}))


def test_a_scorer_from_a_file_gets_the_generations_and_the_examples(write_task, scorer_file, tokenizer,
                                                                    table_model):
    task = _task(write_task, "my_scorer.py:exact", args={"bonus": 0.5})
    res = task.evaluate(table_model, tokenizer)
    assert res.details["generations"] == ["1", "2 3", ""]  # the bigram walk, by hand
    np.testing.assert_array_equal(res.per_example, [1.5, 1.5, 0.5])
    assert res.objectives == {"py": pytest.approx(3.5 / 3)}


def test_the_function_is_imported_once_per_worker_and_the_task_pickles(write_task, scorer_file, tokenizer,
                                                                       table_model):
    task = _task(write_task, "my_scorer.py:exact")
    task.evaluate(table_model, tokenizer)
    task.evaluate(table_model, tokenizer)
    assert task.function.__globals__["CALLS"] == [3, 3]  # one module, two calls
    worker_copy = pickle.loads(pickle.dumps(task))  # as the Ray runner ships it
    worker_copy.evaluate(table_model, tokenizer)
    assert worker_copy.function.__globals__["CALLS"] == [3, 3, 3]  # the same module object in this process


def test_log_likelihood_inputs_score_choices(write_task, scorer_file, tokenizer, table_model):
    rows = [{"prompt": "a", "choices": ["2", "1"], "answer": 1}, {"prompt": "b", "choices": ["2", "x"], "answer": 1}]
    path = write_task({"name": "ll", "kind": "python", "function": "my_scorer.py:choose", "inputs": "loglikelihoods"},
                      {"train": rows}, name="ll")
    res = load_task(path).evaluate(table_model, tokenizer)
    np.testing.assert_array_equal(res.per_example, [1.0, 0.0])  # after "a" the table says "1"; after "b", "2"
    assert all(len(ll) == 2 for ll in res.details["loglikelihoods"])


def test_an_error_in_user_code_fails_the_candidate_with_the_users_traceback(write_task, scorer_file, tokenizer,
                                                                           table_model):
    task = _task(write_task, "my_scorer.py:broken")
    with pytest.raises(FitnessError) as info:
        task.evaluate(table_model, tokenizer)
    msg = str(info.value)
    assert "the scoring function my_scorer.py:broken raised" in msg
    assert "my_scorer.py\", line 12, in broken" in msg and "KeyError: 'no such key'" in msg


def test_a_wrong_number_of_scores_is_a_fitness_error(write_task, scorer_file, tokenizer, table_model):
    with pytest.raises(FitnessError, match=r"returned 1 scores for 3 examples"):
        _task(write_task, "my_scorer.py:short").evaluate(table_model, tokenizer)


@pytest.mark.parametrize(("fn", "message"), [
    ("nope.py:f", "file not found"),
    ("my_scorer.py:missing", "has no callable 'missing'"),
    ("evomerge.no_such_module:f", "importing 'evomerge.no_such_module' failed"),
    ("just_a_name", "must be 'module:callable'"),
])
def test_a_bad_function_reference_fails_at_load(write_task, scorer_file, fn, message):
    with pytest.raises(ConfigError, match=message):
        _task(write_task, fn)


# ---- the language constraint -------------------------------------------------------------------

def test_language_detection_ships_its_model():
    pytest.importorskip("langid")
    assert detect_language("Sept plus cinq font douze, donc la réponse est 12.") == "fr"
    assert detect_language("Seven plus five is twelve, so the answer is 12.") == "en"
    assert detect_language("12") is None


def test_a_correct_answer_in_the_wrong_language_scores_zero():
    pytest.importorskip("langid")
    ex = [{"answer": 12}] * 4
    gens = ["Sept plus cinq font douze, donc la réponse est 12.",  # right, French
            "Seven plus five is twelve, so the answer is 12.",  # right number, English
            "Sept plus cinq font onze, donc la réponse est 11.",  # French, wrong number
            "12"]  # no language at all
    assert answer_in_language(gens, ex, language="fr", extract="last_number") == [1.0, 0.0, 0.0, 0.0]
    assert answer_in_language(gens[1:2], ex[:1], language="en", extract="last_number") == [1.0]


def test_the_shipped_math_fr_task_scores_through_the_language_scorer(tokenizer, table_model, monkeypatch):
    pytest.importorskip("langid")
    task = load_task(REPO / "fitness" / "scorers" / "math_fr.yaml")
    gens = ["Treize plus neuf font vingt-deux, donc la réponse est 22.", "Thirty minus seven is 23.",
            "Cinq fois cinq font vingt-cinq, donc la réponse est 24."]
    monkeypatch.setattr(task.generator, "run", lambda *a: Generations(gens, 0, 0, 0.0, 0.0))
    np.testing.assert_array_equal(task.evaluate(table_model, tokenizer, split="test").per_example, [1, 0, 0])


# ---- code execution --------------------------------------------------------------------------

def test_code_is_cut_out_of_the_first_fenced_block():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n") == "x = 1\n"
    assert extract_code("x = 2") == "x = 2"


def test_pass_at_1_runs_the_tests_in_the_sandbox():
    ex = [{"tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]}] * 4
    gens = ["```python\ndef add(a, b):\n    return a + b\n```",  # correct: 1
            "```python\ndef add(a, b):\n    return a - b\n```",  # wrong: 0
            "```python\ndef add(a, b):\n    while True:\n        pass\n```",  # infinite loop: stopped, 0
            "```python\nimport os\ndef add(a, b):\n    os.fork()\n    return a + b\n```"]  # forks: refused, 0
    assert pass_at_1(gens, ex, cpu_seconds=1, wall_seconds=20) == [1.0, 0.0, 0.0, 0.0]


def test_the_shipped_code_task_scores_a_correct_solution_one(tokenizer, table_model, monkeypatch):
    task = load_task(REPO / "fitness" / "scorers" / "code.yaml")
    gens = ["```python\ndef maximum(xs):\n    return max(xs)\n```",
            "```python\ndef count_vowels(s):\n    return sum(c in 'aeiou' for c in s) + 1\n```"]
    monkeypatch.setattr(task.generator, "run", lambda *a: Generations(gens, 0, 0, 0.0, 0.0))
    np.testing.assert_array_equal(task.evaluate(table_model, tokenizer, split="test").per_example, [1, 0])
