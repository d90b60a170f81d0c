"""The LoRA search's LM loss: answer (+ EOS) NLL given the prompt, on an even mix of the skills' examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lora_helpers import ZOO

from evomerge.errors import ConfigError, FitnessError
from evomerge.lora.fitness import AnswerLoss, mixed_examples

FITNESS = ZOO.parents[1] / "fitness" / "tinylm"
TASKS = [FITNESS / f"{t}.yaml" for t in ("math_a", "lang_b", "list_a")]


def _rows(task: str, split: str) -> list[dict]:
    return [json.loads(x) for x in (FITNESS / f"{task}.{split}.jsonl").read_text().splitlines()]


def test_the_mix_takes_the_first_examples_of_each_task_evenly():
    rows = mixed_examples(TASKS, 300, "train")
    assert [r["task"] for r in rows] == ["math_a"] * 100 + ["lang_b"] * 100 + ["list_a"] * 100
    assert rows[100]["prompt"] == _rows("lang_b", "train")[0]["prompt"]
    uneven = mixed_examples(TASKS, 7, "test")
    assert [r["task"] for r in uneven] == ["math_a"] * 3 + ["lang_b"] * 2 + ["list_a"] * 2


def test_the_mix_refuses_more_examples_than_a_split_holds_and_non_generation_tasks(tmp_path):
    with pytest.raises(FitnessError, match="has 120 examples"):
        mixed_examples(TASKS, 3 * 121, "train")
    ppl = tmp_path / "ppl.yaml"
    ppl.write_text("name: p\nkind: perplexity\ndata: {train: p.jsonl}\n")
    with pytest.raises(ConfigError, match="generation"):
        mixed_examples([ppl], 1, "train")


@torch.no_grad()
def test_answer_loss_equals_the_answer_tokens_nll_computed_from_the_logits():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ZOO / "base")
    model = AutoModelForCausalLM.from_pretrained(ZOO / "base").eval()
    loss = AnswerLoss(TASKS, examples=6, batch_size=4)
    res = loss.evaluate(model, tok, split="train")
    expected = []
    for r in mixed_examples(TASKS, 6, "train"):
        prompt = tok(r["prompt"])["input_ids"]  # BOS + prompt
        answer = tok(r["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt + answer])
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        expected.append(float(np.mean([-float(logp[len(prompt) - 1 + t, a]) for t, a in enumerate(answer)])))
    assert np.allclose(-res.per_example, expected, atol=1e-5)
    assert res.objectives["loss"] == pytest.approx(float(np.mean(expected)), abs=1e-5)
    assert set(res.details["per_task_loss"]) == {"math_a", "lang_b", "list_a"}
