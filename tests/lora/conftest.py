"""Fixtures for the LoRA tests: a tiny random Llama base and hand-written adapters of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the modules import their helpers from here
sys.path.insert(0, str(Path(__file__).parent))
from lora_helpers import write_adapter


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evomerge.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("lora_base") / "base", seed=0)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("lora_adapters")
    return [write_adapter(root / f"lora{k}", tiny_base, seed=10 + k) for k in range(2)]
