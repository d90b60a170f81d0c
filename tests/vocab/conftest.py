"""Fixtures for merges across vocabularies: a base with its own tokenizer and fine-tunes that added tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the modules import their helpers from here
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from vocab_family import build_family


@pytest.fixture(scope="session")
def llama_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_family(tmp_path_factory.mktemp("vocab_llama"), "llama")


@pytest.fixture(scope="session")
def qwen2_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_family(tmp_path_factory.mktemp("vocab_qwen2"), "qwen2")
