"""Staged scoring's fitness side: every task kind racing accepts scores any subset of a split's examples
exactly as the full pass scores them, and its objective is its ``per_example_sign`` × the subset's mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness import load_task
from evomerge.racing.driver import check_racing

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "x", "y", "1", "2", "3"]
rng = np.random.default_rng(0)
PROMPTS = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(23)]
SCORER = '''
def overlap(generations, examples):
    return [len(set(g.split()) & set(e["prompt"].split())) / 5.0 for g, e in zip(generations, examples)]

def pick(loglikelihoods, examples):
    return [float(max(range(len(ll)), key=ll.__getitem__) == e["answer"]) for ll, e in zip(loglikelihoods, examples)]
'''
SUBSETS = [np.array([7, 0, 22, 3]), np.array([5]), np.arange(23)[::-1]]


def _check_subsets(task, model, tokenizer, sign: float) -> None:
    full = task.evaluate(model, tokenizer, split="train")
    assert task.size("train") == full.n == 23
    for idx in SUBSETS:
        part = task.evaluate(model, tokenizer, split="train", indices=idx)
        np.testing.assert_array_equal(part.per_example, full.per_example[idx])  # same scores, in idx's order
        assert part.objectives[task.objective_name] == pytest.approx(sign * part.per_example.mean(), abs=1e-12)
    assert full.objectives[task.objective_name] == pytest.approx(task.per_example_sign * full.per_example.mean())


def _rows(kind: str) -> list[dict]:
    if kind in ("multiple_choice", "python_ll"):
        return [{"prompt": p, "choices": ["a b", "3", "x y 1"], "answer": i % 3} for i, p in enumerate(PROMPTS)]
    if kind == "perplexity":
        return [{"text": p + " e f"} for p in PROMPTS]
    return [{"prompt": p, "answer": p.split()[-1]} for p in PROMPTS]


@pytest.mark.parametrize("kind", ["generation", "multiple_choice", "perplexity", "python", "python_ll"])
def test_every_language_task_kind_scores_a_subset_as_the_full_pass_does(kind, write_task, tokenizer, random_llama,
                                                                         tmp_path):
    spec: dict = {"name": kind, "kind": kind, "batch_size": 4}
    if kind == "generation":
        spec["max_new_tokens"] = 3
    if kind.startswith("python"):
        (tmp_path / "sc.py").write_text(SCORER, encoding="utf-8")
        spec.update(kind="python", max_new_tokens=3, score_range=[0, 1],
                    function="sc.py:pick" if kind == "python_ll" else "sc.py:overlap")
        if kind == "python_ll":
            spec["inputs"] = "loglikelihoods"
    task = load_task(write_task(spec, {"train": _rows(kind)}, name=kind))
    _check_subsets(task, random_llama, tokenizer, task.per_example_sign)


def test_classification_and_weight_distance_subsets():
    from evomerge.models import load_model

    model, _ = load_model(REPO / "zoo/digits/expert_0_4")
    task = load_task(REPO / "fitness/digits/digits_0_4.yaml")
    full = task.evaluate(model, None)
    idx = np.array([700, 3, 17, 0, 11])
    part = task.evaluate(model, None, indices=idx)
    np.testing.assert_array_equal(part.per_example, full.per_example[idx])
    assert part.objectives["digits_0_4"] == part.per_example.mean()
    dist = load_task(REPO / "fitness/digits/sparsity.yaml")
    assert dist.size("train") == 1
    one = dist.evaluate(model, None, indices=[0])
    assert one.objectives[dist.objective_name] == -one.per_example[0] == dist.evaluate(model, None).objectives[
        dist.objective_name]
    with pytest.raises(FitnessError, match="one example"):
        dist.evaluate(model, None, indices=[])
    with pytest.raises(FitnessError, match=r"distinct and in \[0, 1\)"):
        dist.evaluate(model, None, indices=[0, 0])
    with pytest.raises(FitnessError, match="distinct and in"):
        task.evaluate(model, None, indices=[3, 3])


def test_a_python_score_outside_its_declared_range_fails_the_candidate(write_task, tokenizer, random_llama, tmp_path):
    (tmp_path / "sc.py").write_text("def two(generations, examples):\n    return [2.0] * len(examples)\n")
    task = load_task(write_task({"name": "py", "kind": "python", "function": "sc.py:two", "max_new_tokens": 1,
                                 "score_range": [0, 1]}, {"train": _rows("generation")[:3]}, name="py"))
    with pytest.raises(FitnessError, match=r"outside its declared score_range \[0.0, 1.0\]"):
        task.evaluate(random_llama, tokenizer)


class _Cfg:
    """The parts of a RunConfig check_racing reads."""

    def __init__(self, rule: str, runner: str = "local") -> None:
        from evomerge.racing.config import RacingConfig

        self.racing = RacingConfig(rule=rule)
        self.runner = type("R", (), {"type": runner, "target": None})()


def test_racing_is_refused_for_kinds_whose_objective_is_not_a_mean_or_whose_range_is_unknown(write_task):
    from evomerge.racing.config import RacingConfig
    from evomerge.study.objectives import Objective

    ppl = load_task(write_task({"name": "ppl", "kind": "perplexity"}, {"train": _rows("perplexity")}, name="ppl"))
    obj = [Objective("ppl", "minimize")]
    with pytest.raises(ConfigError, match=r"racing.rule bound: task 'ppl' \(kind perplexity\) has no known range "
                                          "of its per-example scores, which the Bernstein-Serfling bound needs"):
        check_racing(_Cfg("bound"), obj, [ppl], True)
    http = load_task(write_task({"name": "judge", "kind": "http", "url": "http://127.0.0.1:9/score"},
                                {"train": _rows("generation")}, name="judge"))
    with pytest.raises(ConfigError, match=r"task 'judge' \(kind http\) cannot be scored in stages: its objective is "
                                          "the scorer's own number"):
        check_racing(_Cfg("bound"), [Objective("judge", "maximize")], [http], True)
    with pytest.raises(ConfigError, match="runner type 'function' has no fitness tasks"):
        check_racing(_Cfg("bound", runner="function"), obj, [ppl], True)
    check_racing(_Cfg("none"), obj, [ppl], True)  # racing off: nothing to refuse
    check_racing(_Cfg("median"), obj, [ppl], True)  # the median rule needs no range
    normal = _Cfg("bound")
    normal.racing = normal.racing.model_copy(update={"test": "normal"})
    check_racing(normal, obj, [ppl], True)  # nor the normal test
    check_racing(_Cfg("successive_halving"), obj, [ppl], True)  # rungs rebuilt from the records
    check_racing(_Cfg("hyperband"), obj, [ppl], True)
    stray = _Cfg("median")
    stray.racing = RacingConfig(rule="median", reduction_factor=3)
    with pytest.raises(ConfigError, match="racing.reduction_factor: only rules successive_halving and hyperband"):
        check_racing(stray, obj, [ppl], True)
    with pytest.raises(ConfigError, match="racing.rule median: Optuna's pruners are single-objective"):
        check_racing(_Cfg("median"), obj, [ppl], False)
