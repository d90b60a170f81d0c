"""evomerge's merges across vocabularies equal mergekit 0.1.5's, row by row for every token both outputs have.

Runs ``mergekit-yaml`` from its own venv (see tests/mergekit_reference.py;
skipped, saying so, when absent). Rows are compared by token string because
mergekit numbers a union's new tokens in the order of a Python set (it varies
between its runs); evomerge numbers them in recipe order. Every other tensor,
the vocabulary itself, config.json's vocab_size and the chat template agree.
Values agree to float32 rounding (``TOL``): with weights other than 0.5 the
methods' sums round differently from mergekit's in the last bit (the methods'
own parity is tests/merge's concern); a misplaced row would differ by ~0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mergekit_reference import require_mergekit, run_mergekit
from safetensors.torch import load_file

from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

TOL = dict(rtol=1e-6, atol=1e-7)


def _config(fam: dict[str, Path], method: str, **extra) -> dict:
    if method == "linear":  # mergekit's linear averages the base_model in too: list it as a model instead
        return {"models": [{"model": str(fam[k]), "parameters": {"weight": w}}
                           for k, w in (("base", 0.2), ("chat", 0.5), ("tool", 0.3))],
                "merge_method": method, "dtype": "float32", **extra}
    return {"models": [{"model": str(fam["chat"]), "parameters": {"weight": 0.7}},
                       {"model": str(fam["tool"]), "parameters": {"weight": 0.4}}],
            "base_model": str(fam["base"]), "merge_method": method, "dtype": "float32", **extra}


def _compare(ours: Path, theirs: Path) -> None:
    from transformers import AutoTokenizer

    a, b = load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors")
    ta, tb = AutoTokenizer.from_pretrained(ours), AutoTokenizer.from_pretrained(theirs)
    va, vb = ta.get_vocab(), tb.get_vocab()
    assert set(va) == set(vb)
    assert json.loads((ours / "config.json").read_text())["vocab_size"] == \
        json.loads((theirs / "config.json").read_text())["vocab_size"]
    assert set(a) == set(b)
    tokens = sorted(va)
    for name in a:
        if a[name].shape[0] == b[name].shape[0] and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            ours_rows = a[name][[va[t] for t in tokens]]
            theirs_rows = b[name][[vb[t] for t in tokens]]
            torch.testing.assert_close(ours_rows, theirs_rows, **TOL, msg=f"rows of {name}")
            torch.testing.assert_close(a[name][len(va):], b[name][len(vb):], **TOL)  # padding rows
        else:
            torch.testing.assert_close(a[name], b[name], **TOL, msg=name)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "w1 w2"}]
    if tb.chat_template:
        assert ta.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
            tb.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


CASES = {
    "union": dict(tokenizer_source="union", chat_template="chatml"),
    "base": dict(tokenizer_source="base"),
    "model": dict(tokenizer_source="<tool>"),
    "tokens": dict(tokenizer={"source": "union", "pad_to_multiple_of": 16, "tokens": {
        "<|im_end|>": {"source": "<tool>", "force": True},
        "<new>": {"source": {"kind": "model_token", "model": "<base>", "token": "w3"}},
        "<nil>": {"source": {"kind": "zero"}}}}),
}


def _resolve(value, fam: dict[str, Path]):
    """Fill the ``<name>`` placeholders of a case with the family's folders."""
    if isinstance(value, dict):
        return {k: _resolve(v, fam) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("<") and value.strip("<>") in fam:
        return str(fam[value.strip("<>")])
    return value


# (architecture, method, case): the headline case runs by default; the rest (each mergekit run costs ~15 s) are slow
RUNS = [
    pytest.param("llama", "task_arithmetic", "union", id="llama-task_arithmetic-union"),
    *(pytest.param(arch, method, case, id=f"{arch}-{method}-{case}", marks=pytest.mark.slow)
      for arch, method, case in [("qwen2", "task_arithmetic", "union"), ("llama", "task_arithmetic", "base"),
                                 ("llama", "task_arithmetic", "model"), ("llama", "task_arithmetic", "tokens"),
                                 ("llama", "linear", "union"), ("llama", "linear", "tokens")]),
]


@pytest.mark.parametrize(("arch", "method", "case"), RUNS)
def test_merge_across_vocabularies_equals_mergekit(arch, method, case, request, tmp_path):
    require_mergekit()
    fam = request.getfixturevalue(f"{arch}_family")
    config = _config(fam, method, **_resolve(CASES[case], fam))
    done = run_mergekit(config, tmp_path / "mk")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = merge_to_disk(Recipe.from_dict(config), tmp_path / "evo").out_dir
    _compare(ours, tmp_path / "mk")
