"""Merging models whose vocabularies differ, as mergekit 0.1.5 does: union/base tokenizers, token sources, padding.

Rows are checked by hand against mergekit's rule, then (when the reference
venv exists) against mergekit's own output for the same config, token by token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import ConfigError
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _recipe(fam: dict[str, Path], method: str = "task_arithmetic", **extra) -> Recipe:
    models = [{"model": str(fam["chat"]), "parameters": {"weight": 0.7}},
              {"model": str(fam["tool"]), "parameters": {"weight": 0.4}}]
    if method == "linear":  # a base_model joins a linear merge, as in mergekit: it needs a weight (0: left out)
        models.append({"model": str(fam["base"]), "parameters": {"weight": 0.0}})
    return Recipe.from_dict({"models": models, "base_model": str(fam["base"]), "merge_method": method, **extra})


def _rows(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    from transformers import AutoTokenizer

    return load_file(folder / "model.safetensors"), AutoTokenizer.from_pretrained(folder).get_vocab()


def _load_strictly(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    assert not any(info.values()), info
    return model.eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_union_merge_loads_strictly_and_generates_with_its_chat_template(arch, request, tmp_path):
    fam = request.getfixturevalue(f"{arch}_family")
    out = merge_to_disk(_recipe(fam, tokenizer_source="union", chat_template="chatml"), tmp_path / "m").out_dir
    model, tok = _load_strictly(out)
    assert len(tok) == model.config.vocab_size == 44  # 40 base tokens + im_start, im_end, tool, zebra
    ids = tok.apply_chat_template([{"role": "user", "content": "w1 w2"}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.convert_tokens_to_ids("<|im_start|>")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4 and int(gen.max()) < 44


def test_rows_of_tokens_some_model_lacks_follow_mergekits_rule(llama_family, tmp_path):
    fam = llama_family
    out = merge_to_disk(_recipe(fam, tokenizer_source="union"), tmp_path / "m").out_dir
    merged, vocab = _rows(out)
    src = {k: _rows(p) for k, p in fam.items()}
    for name in (EMBED, HEAD):

        def row(model: str, token: str, name: str = name) -> torch.Tensor:
            return src[model][0][name][src[model][1][token]]

        # a base token: base + 0.7 (chat - base) + 0.4 (tool - base), as without any vocabulary work
        w = "w7"
        expect = row("base", w) + 0.7 * (row("chat", w) - row("base", w)) + 0.4 * (row("tool", w) - row("base", w))
        torch.testing.assert_close(merged[name][vocab[w]], expect, rtol=0, atol=1e-6)
        # only chat has <|im_start|>: every model (base included) takes chat's row, so the merge is that row
        torch.testing.assert_close(merged[name][vocab["<|im_start|>"]], row("chat", "<|im_start|>"), rtol=0, atol=0)
        # chat and tool have <|im_end|>, the base does not: the base's row is their mean
        a = (row("chat", "<|im_end|>") + row("tool", "<|im_end|>")) / 2
        expect = a + 0.7 * (row("chat", "<|im_end|>") - a) + 0.4 * (row("tool", "<|im_end|>") - a)
        torch.testing.assert_close(merged[name][vocab["<|im_end|>"]], expect, rtol=0, atol=1e-6)


def test_base_tokenizer_keeps_the_base_vocabulary(llama_family, tmp_path):
    fam = llama_family
    out = merge_to_disk(_recipe(fam, tokenizer_source="base"), tmp_path / "m").out_dir
    model, tok = _load_strictly(out)
    assert len(tok) == model.config.vocab_size == 40 and "<|im_end|>" not in tok.get_vocab()
    merged, _ = _rows(out)
    b, c, t = (load_file(fam[k] / "model.safetensors")[EMBED] for k in ("base", "chat", "tool"))
    expect = b + 0.7 * (c[:40] - b) + 0.4 * (t[:40] - b)  # the fine-tunes keep the base's ids for its tokens
    torch.testing.assert_close(merged[EMBED], expect, rtol=0, atol=1e-6)


def test_token_sources_force_zero_and_padding(llama_family, tmp_path):
    fam = llama_family
    tokens = {
        "<|im_end|>": {"source": str(fam["tool"]), "force": True},  # tool's row in every model
        "<new>": {"source": {"kind": "model_token", "model": str(fam["base"]), "token": "w3"}},
        "<nil>": {"source": {"kind": "zero"}},
    }
    recipe = _recipe(fam, method="linear", tokenizer={"source": "union", "tokens": tokens, "pad_to_multiple_of": 16})
    out = merge_to_disk(recipe, tmp_path / "m").out_dir
    model, tok = _load_strictly(out)
    assert model.config.vocab_size == 48 and len(tok) == 46
    merged, vocab = _rows(out)
    base_rows, base_vocab = _rows(fam["base"])
    tool_rows, tool_vocab = _rows(fam["tool"])
    e = merged[EMBED]
    torch.testing.assert_close(e[vocab["<|im_end|>"]], tool_rows[EMBED][tool_vocab["<|im_end|>"]], rtol=0, atol=1e-6)
    torch.testing.assert_close(e[vocab["<new>"]], base_rows[EMBED][base_vocab["w3"]], rtol=0, atol=1e-6)
    assert torch.count_nonzero(e[vocab["<nil>"]]) == 0
    # padding rows: each model's mean row, then merged (linear is affine, so the mean of the merged rows)
    torch.testing.assert_close(e[46:], e[:46].mean(0).expand(2, -1), rtol=0, atol=1e-6)


def test_vocabulary_problems_fail_in_the_plan_naming_the_token(llama_family, tmp_path):
    fam = llama_family
    other = tmp_path / "elsewhere"
    bad = {"<x>": {"source": str(other)}}
    with pytest.raises(ConfigError, match=r"tokenizer.tokens\['<x>'\].*not one of the models"):
        merge_to_disk(_recipe(fam, tokenizer={"tokens": bad}), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    nosrc = {"<y>": {"force": True}}
    with pytest.raises(ConfigError, match=r"tokenizer.tokens\['<y>'\].*no 'source'"):
        merge_to_disk(_recipe(fam, tokenizer={"tokens": nosrc}), tmp_path / "m")


def test_without_tokenizer_settings_different_vocabularies_are_refused_by_name(llama_family, tmp_path):
    from evomerge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="tokenizer_source: union"):
        merge_to_disk(_recipe(llama_family), tmp_path / "m")


def test_chat_template_alone_resaves_the_tokenizer_with_it(llama_family, tmp_path):
    from transformers import AutoTokenizer

    from evomerge.vocab.chat_template import NAMED_TEMPLATES

    base = str(llama_family["base"])
    literal = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    for k, template in enumerate(["chatml", literal]):
        recipe = Recipe.from_dict({"models": [{"model": base}], "merge_method": "passthrough",
                                   "chat_template": template})
        out = merge_to_disk(recipe, tmp_path / f"m{k}").out_dir
        tok = AutoTokenizer.from_pretrained(out)
        assert tok.chat_template == NAMED_TEMPLATES.get(template, template)
        assert tok.get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
    with pytest.raises(ConfigError, match="not a Jinja template"):
        Recipe.from_dict({"models": [{"model": base}], "merge_method": "passthrough", "chat_template": "{{x}}"})


def test_tokenizer_settings_export_back_to_mergekit_yaml(llama_family):
    import yaml

    from evomerge.recipe.mergekit import to_mergekit

    recipe = _recipe(llama_family, tokenizer={"source": "union", "pad_to_multiple_of": 8, "tokens": {
        "<nil>": {"source": {"kind": "zero"}, "force": True}}}, chat_template="chatml")
    exported = to_mergekit(recipe).to_yaml()
    data = yaml.safe_load(exported)
    assert data["tokenizer"]["tokens"]["<nil>"] == {"source": {"kind": "zero"}, "force": True}
    assert data["chat_template"] == "chatml" and data["tokenizer"]["pad_to_multiple_of"] == 8
    assert Recipe.from_dict(data).tokenizer == recipe.tokenizer
