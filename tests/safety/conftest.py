"""The safety tests import their helpers (``safety_helpers``) from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the suite runs with --import-mode=importlib, which puts no test folder on sys.path
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
