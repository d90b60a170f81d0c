"""Multiple choice and perplexity against manual computations with the model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fitness_models import bigram_table, make_table_llama, tok_id

from evomerge.errors import FitnessError
from evomerge.fitness import load_task

MC_ROWS = [
    {"prompt": "what is", "choices": ["a", "b c", "the x y"], "answer": 1},
    {"prompt": "a plus b is", "choices": ["3", "7"], "answer": 0},
    {"prompt": "x", "choices": ["y", "what is the", "1 2 3 4", "c"], "answer": 3},
    {"prompt": "the 7", "choices": ["is", "plus"], "answer": 1},
    {"prompt": "b b b b b b", "choices": ["c d", "e"], "answer": 0},
]


def _manual_loglik(model, tokenizer, prompt: str, choice: str) -> float:
    ctx = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + choice)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    return sum(float(logp[t - 1, full[t]]) for t in range(len(ctx), len(full)))


@pytest.mark.parametrize("normalization", ["none", "tokens", "chars"])
def test_multiple_choice_loglikelihoods_match_a_manual_computation(write_task, tokenizer, random_llama,
                                                                   normalization):
    path = write_task({"name": "mc", "kind": "multiple_choice", "normalization": normalization},
                      {"train": MC_ROWS})
    res = load_task(path).evaluate(random_llama, tokenizer)
    for r, got in zip(MC_ROWS, res.details["loglikelihoods"], strict=True):
        want = []
        for c in r["choices"]:
            ll = _manual_loglik(random_llama, tokenizer, r["prompt"], c)
            want.append(ll / len(c.split()) if normalization == "tokens" else
                        ll / len(" " + c) if normalization == "chars" else ll)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    chosen = [int(np.argmax(ll)) for ll in res.details["loglikelihoods"]]
    np.testing.assert_array_equal(res.per_example, [float(c == r["answer"]) for c, r in zip(chosen, MC_ROWS,
                                                                                           strict=True)])
    assert res.objectives["mc"] == pytest.approx(res.per_example.mean())


def test_multiple_choice_picks_the_choice_the_table_model_predicts(write_task, tokenizer):
    # after "is" the model strongly predicts "3", after "3" it predicts "</s>"; "7" gets noise only
    model = make_table_llama(bigram_table({"is": "3", "x": "y", "y": "c"}))
    rows = [{"prompt": "what is", "choices": ["7", "3"], "answer": 1},
            {"prompt": "what is", "choices": ["3", "7"], "answer": 1},
            {"prompt": "x", "choices": ["y c", "y d", "c c"], "answer": 0}]
    res = load_task(write_task({"name": "mc", "kind": "multiple_choice"}, {"train": rows})).evaluate(model, tokenizer)
    assert res.details["chosen"] == [1, 0, 0]
    np.testing.assert_array_equal(res.per_example, [1.0, 0.0, 1.0])


def test_multiple_choice_batch_size_does_not_change_scores(write_task, tokenizer, random_llama):
    out = {}
    for bs in (1, 64):
        path = write_task({"name": "mc", "kind": "multiple_choice", "batch_size": bs}, {"train": MC_ROWS},
                          name=f"b{bs}")
        out[bs] = load_task(path).evaluate(random_llama, tokenizer)
    np.testing.assert_array_equal(out[1].per_example, out[64].per_example)
    for a, b in zip(out[1].details["loglikelihoods"], out[64].details["loglikelihoods"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


TEXTS = ["what is a plus b", "the x", "1 2 3 4 5 6 7 8 9", "a b c d e f g h what is the", "is is"]


def test_perplexity_equals_cross_entropy_per_text(write_task, tokenizer, random_llama):
    path = write_task({"name": "ppl", "kind": "perplexity", "batch_size": 2}, {"train": [{"text": t} for t in TEXTS]})
    task = load_task(path)
    assert task.direction == "minimize"
    res = task.evaluate(random_llama, tokenizer)
    want = []
    for t in TEXTS:
        ids = torch.tensor([tokenizer(t)["input_ids"]])
        with torch.no_grad():
            logits = random_llama(input_ids=ids).logits
        want.append(float(F.cross_entropy(logits[0, :-1], ids[0, 1:])))
    np.testing.assert_allclose(res.per_example, -np.array(want), rtol=1e-5)
    assert res.objectives["ppl"] == pytest.approx(np.mean(want), rel=1e-5)
    assert res.details["scored_tokens"] == sum(len(t.split()) for t in TEXTS)  # BOS is context, not scored


def test_perplexity_batch_size_does_not_change_scores(write_task, tokenizer, random_llama):
    out = [load_task(write_task({"name": "p", "kind": "perplexity", "batch_size": bs},
                                {"train": [{"text": t} for t in TEXTS]}, name=f"b{bs}")).evaluate(random_llama,
                                                                                                 tokenizer)
           for bs in (1, 64)]
    np.testing.assert_allclose(out[0].per_example, out[1].per_example, rtol=1e-6)


def test_perplexity_nan_loss_names_the_task_and_example(write_task, tokenizer):
    model = make_table_llama(bigram_table({}))
    with torch.no_grad():  # a NaN embedding for "h": only the texts that contain "h" get a NaN loss
        model.model.embed_tokens.weight[tok_id("h")] = float("nan")
    rows = [{"text": "a b"}, {"text": "c d"}, {"text": "what h is"}, {"text": "h x"}]
    path = write_task({"name": "ppl_nan", "kind": "perplexity"}, {"train": rows})
    with pytest.raises(FitnessError, match=r"task 'ppl_nan' split 'train': loss is nan at example 2 \(2 non-finite"):
        load_task(path).evaluate(model, tokenizer)


def test_perplexity_text_of_one_token_is_rejected(write_task, tokenizer, random_llama):
    path = write_task({"name": "p", "kind": "perplexity", "add_special_tokens": False},
                      {"train": [{"text": "a b"}, {"text": "c"}]})
    with pytest.raises(FitnessError, match=r"task 'p' split 'train' example 1: text encodes to 1 token"):
        load_task(path).evaluate(random_llama, tokenizer)


def test_multiple_choice_answer_out_of_range_names_file_and_example(write_task):
    path = write_task({"name": "mc", "kind": "multiple_choice"},
                      {"train": [MC_ROWS[0], {"prompt": "x", "choices": ["a", "b"], "answer": 2}]})
    with pytest.raises(FitnessError, match=r"task\.train\.jsonl: example 1: 'answer' 2 is not an index"):
        load_task(path)
