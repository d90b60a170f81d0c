"""The prebuilt zoo committed under zoo/ is complete, current, and loads with no custom code."""

from __future__ import annotations

import json

import pytest
import torch

from evomerge.zoo import DigitsMLP, default_out_dir, is_built
from evomerge.zoo.build import REPO_ROOT

ZOO = default_out_dir()


@pytest.mark.parametrize("name", ["tinylm", "digits"])
def test_prebuilt_zoo_matches_the_current_recipe(name):
    assert is_built(name, ZOO), f"zoo/{name} is missing or stale: run `evomerge zoo build {name}`"


@pytest.mark.parametrize("member", ["base", "math_a", "lang_b", "list_a"])
def test_prebuilt_tinylm_loads_with_auto_classes_and_answers_in_clean_text(member):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ZOO / "tinylm" / member
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    enc = tok(["question : what is 12 plus 3 ? answer :"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "<" not in text and "▁" not in text
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == "question : what is 12 plus 3 ? answer :"


def test_prebuilt_digits_members_load():
    root = ZOO / "digits"
    for member in ("init", "expert_0_4", "expert_5_9", "random/init_00", "random/init_19"):
        model = DigitsMLP.from_pretrained(root / member)
        assert model(torch.zeros(1, 64)).shape == (1, 10)


@pytest.mark.parametrize("name", ["tinylm", "digits"])
def test_repository_task_files_are_the_prebuilt_builds(name):
    built = ZOO / name / "tasks"
    for f in sorted(built.iterdir()):
        assert (REPO_ROOT / "fitness" / name / f.name).read_bytes() == f.read_bytes(), f.name


def test_tinylm_splits_are_sized_for_search_and_for_measurable_test_differences():
    for task in ("math_a", "lang_b", "list_a", "math_b"):
        rows = {s: (REPO_ROOT / "fitness" / "tinylm" / f"{task}.{s}.jsonl").read_text().splitlines()
                for s in ("train", "validation", "test")}
        assert 100 <= len(rows["train"]) <= 200 and len(rows["test"]) >= 300
        assert set(json.loads(rows["test"][0])) == {"prompt", "answer"}
