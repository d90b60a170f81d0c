"""Fixtures for the fitness tests (the helpers behind them live in ``fitness_models.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

# the suite runs with --import-mode=importlib, which puts no test folder on sys.path;
# the test modules import their helpers from this folder's fitness_models.py
sys.path.insert(0, str(Path(__file__).parent))
from fitness_models import BOS, EOS, PAD, VOCAB, make_tokenizer, write_jsonl


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="session")
def random_llama() -> Any:
    """A random tiny Llama over the test vocabulary (behaviour not controlled; used against references)."""
    from transformers import LlamaForCausalLM

    from evomerge.testing import tiny_llama_config

    torch.manual_seed(0)
    cfg = tiny_llama_config(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = BOS, EOS, PAD
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharpen the random logits so greedy choices are far from ties
        model.lm_head.weight.mul_(8.0)
    return model


@pytest.fixture
def write_task(tmp_path: Path) -> Callable[..., Path]:
    """Write ``{split: rows}`` as JSONL next to a task YAML built from ``spec``; return the YAML path."""

    def _write(spec: dict, splits: dict[str, list[dict]] | None = None, name: str = "task") -> Path:
        spec = dict(spec)
        if splits is not None:
            spec["data"] = {s: write_jsonl(tmp_path / f"{name}.{s}.jsonl", rows).name for s, rows in splits.items()}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return _write
