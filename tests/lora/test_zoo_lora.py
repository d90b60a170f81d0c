"""The tinylm LoRA zoo: PEFT folders, cached by their own stamp, deterministic, current in the repository."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from evomerge.lora import LoraAdapter, open_adapters
from evomerge.zoo import TinyLoraRecipe, build_zoo, default_out_dir, is_built

SKILLS = ("math_a", "lang_b", "list_a")


def test_prebuilt_lora_adapters_match_the_current_recipe():
    assert is_built("tinylm-lora", default_out_dir()), "zoo/tinylm/lora_* missing or stale: " \
        "run `evomerge zoo build tinylm-lora`"


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("peft")
    recipe = TinyLoraRecipe.tiny()
    a = build_zoo("tinylm-lora", tmp_path_factory.mktemp("a"), recipe=recipe)
    b = build_zoo("tinylm-lora", tmp_path_factory.mktemp("b"), recipe=recipe)
    return recipe, a, b


def test_a_tiny_lora_build_writes_peft_folders_of_its_base_byte_identical_on_rerun(tiny_zoo):
    _, a, b = tiny_zoo
    adapters = open_adapters(a / "base", [a / f"lora_{s}" for s in SKILLS])
    for ad in adapters:
        assert ad.rank == 2 and ad.scaling == 2.0 and len(ad.pairs) == 2 * 7
        assert sorted(p.name for p in ad.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for s in SKILLS:
        name = "adapter_model.safetensors"
        assert (a / f"lora_{s}" / name).read_bytes() == (b / f"lora_{s}" / name).read_bytes()
        configs = [json.loads((root / f"lora_{s}" / "adapter_config.json").read_text()) for root in (a, b)]
        # a base outside the repository is recorded by its absolute path
        assert configs[0].pop("base_model_name_or_path") == str((a / "base").resolve())
        assert configs[1].pop("base_model_name_or_path") == str((b / "base").resolve())
        assert configs[0] == configs[1]
    config = json.loads((a / "lora_math_a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == sorted(config["target_modules"])


def test_the_lora_stamp_caches_the_build_and_follows_the_base_recipe(tiny_zoo):
    recipe, a, _ = tiny_zoo
    out = a.parent
    assert is_built("tinylm-lora", out, recipe) and is_built("tinylm", out, recipe.parent)
    start = time.perf_counter()
    build_zoo("tinylm-lora", out, recipe=recipe)
    assert time.perf_counter() - start < 0.5
    assert not is_built("tinylm-lora", out, dataclasses.replace(recipe, lr=5e-3))
    changed_base = dataclasses.replace(recipe, parent=dataclasses.replace(recipe.parent, seed=1))
    assert not is_built("tinylm-lora", out, changed_base)


def test_the_adapters_load_in_peft_on_their_base(tiny_zoo):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    _, a, _ = tiny_zoo
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a / "base"), str(a / "lora_list_a"))
    names = {n for n, _ in model.named_parameters() if "lora_A" in n}
    assert len(names) == len(LoraAdapter.open(a / "lora_list_a").pairs)
