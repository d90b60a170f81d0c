"""Fixtures shared across the test-suite: tiny Llama families built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny float32 Llama base and three experts that are small perturbations of it."""
    from evomerge.testing import tiny_llama_family

    return tiny_llama_family(tmp_path_factory.mktemp("family"), n_experts=3)
