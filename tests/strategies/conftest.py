"""Shared setup for the strategy tests (helpers live in ``strategy_problems.py`` and ``strategy_driver.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

# the suite runs with --import-mode=importlib, which puts no test folder on sys.path
sys.path.insert(0, str(Path(__file__).parent))
