"""A fusion written into the resident base gives exactly the logits of W0 + s·B·A set by hand (and by peft)."""

from __future__ import annotations

import json

import pytest
import torch
from lora_helpers import ZOO

from evomerge.lora import LoraAdapter, ResidentLoraMerge, export_adapter, export_checkpoint

IDS = torch.tensor([[1, 5, 9, 14, 3, 7, 22, 8], [2, 4, 6, 8, 10, 12, 14, 16]])


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def _by_hand(base, adapters, alpha, beta):
    """The base with every adapted weight set to W0 + (B @ A)·s, fused per the paper, written out longhand."""
    model = _load(base)
    ads = [LoraAdapter.open(p) for p in adapters]
    params = dict(model.named_parameters())
    for module in ads[0].pairs:
        a = sum(b_i * _keep_top(ad.pairs[module].a, al) for ad, al, b_i in zip(ads, alpha, beta, strict=True))
        b = sum(b_i * ad.pairs[module].b for ad, b_i in zip(ads, beta, strict=True))
        w = params[f"{module}.weight"]
        w.copy_(w + (b @ a) * ads[0].scaling)
    return model


def _keep_top(a, alpha):
    k = int(alpha * a.numel())
    order = torch.argsort(a.abs().reshape(-1), descending=True, stable=True)
    mask = torch.zeros(a.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return a * mask.view(a.shape)


@torch.no_grad()
def test_one_adapter_at_alpha_1_beta_1_gives_exactly_the_logits_of_the_hand_applied_adapter(tiny_base, tiny_adapters):
    merge = ResidentLoraMerge(tiny_base, tiny_adapters[:1])
    merge.apply([1.0], [1.0])
    expected = _by_hand(tiny_base, tiny_adapters[:1], [1.0], [1.0])(IDS).logits
    assert torch.equal(merge.model(IDS).logits, expected)


@torch.no_grad()
def test_two_adapters_with_sparsified_a_give_exactly_the_hand_fused_logits(tiny_base, tiny_adapters):
    alpha, beta = [0.5, 0.8], [1.25, -0.5]
    merge = ResidentLoraMerge(tiny_base, tiny_adapters)
    merge.apply(alpha, beta)
    assert torch.equal(merge.model(IDS).logits, _by_hand(tiny_base, tiny_adapters, alpha, beta)(IDS).logits)


@torch.no_grad()
def test_candidates_overwrite_each_other_and_restore_gives_the_base_back(tiny_base, tiny_adapters):
    merge = ResidentLoraMerge(tiny_base, tiny_adapters)
    base_logits = _load(tiny_base)(IDS).logits
    merge.apply([1.0, 1.0], [1.5, 1.5])
    merge.apply([0.3, 0.6], [0.2, -1.0])
    assert torch.equal(merge.model(IDS).logits, _by_hand(tiny_base, tiny_adapters, [0.3, 0.6], [0.2, -1.0])(IDS).logits)
    merge.apply([1.0, 1.0], [0.0, 0.0])
    assert torch.equal(merge.model(IDS).logits, base_logits)
    merge.apply([1.0, 1.0], [1.0, 1.0])
    merge.restore()
    assert torch.equal(merge.model(IDS).logits, base_logits)


@torch.no_grad()
def test_the_zoo_adapter_applied_in_place_equals_peft_merged_exactly_and_peft_unmerged_closely():
    peft = pytest.importorskip("peft")
    base, adapter = ZOO / "base", ZOO / "lora_math_a"
    merge = ResidentLoraMerge(base, [adapter])
    merge.apply([1.0], [1.0])
    ours = merge.model(IDS).logits
    unmerged = peft.PeftModel.from_pretrained(_load(base), str(adapter)).eval()
    assert torch.allclose(unmerged(input_ids=IDS).logits, ours, atol=1e-5, rtol=1e-5)
    merged = unmerged.merge_and_unload()
    assert torch.equal(merged(input_ids=IDS).logits, ours)


@torch.no_grad()
def test_exported_checkpoint_loads_with_auto_classes_and_equals_the_in_place_model(tiny_base, tiny_adapters, tmp_path):
    alpha, beta = [0.7, 0.4], [0.9, 1.1]
    out = export_checkpoint(tiny_base, tiny_adapters, alpha, beta, tmp_path / "merged")
    merge = ResidentLoraMerge(tiny_base, tiny_adapters)
    merge.apply(alpha, beta)
    assert torch.equal(_load(out)(IDS).logits, merge.model(IDS).logits)


@torch.no_grad()
def test_exported_fused_adapter_is_a_peft_folder_holding_the_fusion(tiny_base, tiny_adapters, tmp_path):
    alpha, beta = [0.7, 0.4], [0.9, 1.1]
    out = export_adapter(tiny_base, tiny_adapters, alpha, beta, tmp_path / "fused")
    fused = LoraAdapter.open(out)
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    single = ResidentLoraMerge(tiny_base, [out])
    single.apply([1.0], [1.0])
    merge = ResidentLoraMerge(tiny_base, tiny_adapters)
    merge.apply(alpha, beta)
    assert fused.rank == 2
    assert torch.equal(single.model(IDS).logits, merge.model(IDS).logits)
    peft = pytest.importorskip("peft")
    theirs = peft.PeftModel.from_pretrained(_load(tiny_base), str(out)).eval().merge_and_unload()
    assert torch.equal(theirs(input_ids=IDS).logits, merge.model(IDS).logits)
