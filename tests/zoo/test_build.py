"""Zoo builds are cached by their stamp, deterministic, and write loadable Hugging Face folders."""

from __future__ import annotations

import dataclasses
import time

import torch

from evomerge.zoo import build_zoo, is_built
from evomerge.zoo.build import STAMP
from evomerge.zoo.digits import DigitsRecipe
from evomerge.zoo.tinylm import TinyLMRecipe


def test_stamp_makes_a_second_build_instant_and_a_new_recipe_rebuilds(tmp_path):
    recipe = TinyLMRecipe.tiny()
    folder = build_zoo("tinylm", tmp_path, recipe=recipe)
    stamp_mtime = (folder / STAMP).stat().st_mtime_ns
    assert is_built("tinylm", tmp_path, recipe)
    start = time.perf_counter()
    build_zoo("tinylm", tmp_path, recipe=recipe)
    assert time.perf_counter() - start < 0.5
    assert (folder / STAMP).stat().st_mtime_ns == stamp_mtime
    assert not is_built("tinylm", tmp_path, dataclasses.replace(recipe, seed=1))


def test_tiny_tinylm_build_is_byte_identical_on_rerun_and_loads_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = TinyLMRecipe.tiny()
    a = build_zoo("tinylm", tmp_path / "a", recipe=recipe)
    b = build_zoo("tinylm", tmp_path / "b", recipe=recipe)
    for member in ("base", "math_a", "lang_b", "list_a"):
        assert (a / member / "model.safetensors").read_bytes() == (b / member / "model.safetensors").read_bytes()
    assert (a / "tasks" / "math_a.test.jsonl").read_bytes() == (b / "tasks" / "math_a.test.jsonl").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(a / "math_a")
    tok = AutoTokenizer.from_pretrained(a / "math_a")
    assert model.config.model_type == "llama" and tok.pad_token_id is not None


def test_tiny_digits_build_writes_experts_and_random_inits(tmp_path):
    from evomerge.zoo import DigitsMLP

    folder = build_zoo("digits", tmp_path, recipe=DigitsRecipe.tiny())
    init = DigitsMLP.from_pretrained(folder / "init")
    expert = DigitsMLP.from_pretrained(folder / "expert_0_4")
    assert not torch.equal(init.layers[0].weight, expert.layers[0].weight)
    assert sorted(p.name for p in (folder / "random").iterdir()) == ["init_00", "init_01"]
    assert (folder / "tasks" / "digits_0_4.yaml").exists()
