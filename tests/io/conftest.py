"""Tiny random Llama checkpoints shared by the I/O tests (built once per session: a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.testing import save_tiny_llama, tiny_llama_config


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def llama(tiny_root: Path) -> Path:
    """A float32 tiny Llama saved by transformers as one model.safetensors."""
    return save_tiny_llama(tiny_root / "llama", seed=0)


@pytest.fixture(scope="session")
def expert(tiny_root: Path, llama: Path) -> Path:
    """A small perturbation of ``llama``: same architecture, tensors and shapes."""
    return save_tiny_llama(tiny_root / "expert", seed=1, base_dir=llama)


@pytest.fixture(scope="session")
def sharded_llama(tiny_root: Path, llama: Path) -> Path:
    """``llama`` re-saved by transformers in several shards with an index."""
    from transformers import AutoModelForCausalLM

    out = tiny_root / "sharded"
    AutoModelForCausalLM.from_pretrained(llama).save_pretrained(out, max_shard_size="20KB")
    return out


@pytest.fixture(scope="session")
def big_vocab_llama(tiny_root: Path) -> Path:
    """Same architecture as ``llama`` but a larger vocabulary (another tokenizer)."""
    return save_tiny_llama(tiny_root / "big_vocab", seed=2, config=tiny_llama_config(vocab_size=96))


@pytest.fixture(scope="session")
def wide_llama(tiny_root: Path) -> Path:
    """Same architecture and vocabulary as ``llama`` but a wider MLP."""
    return save_tiny_llama(tiny_root / "wide", seed=3, config=tiny_llama_config(intermediate_size=96))

