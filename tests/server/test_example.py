"""examples/remote_scoring.py drives a study to completion against a live server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from evomerge.client import EvomergeClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "remote_scoring.py"


def test_the_remote_scoring_example_completes_a_study(live_server, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("remote_scoring", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["remote_scoring.py", "--url", live_server.url, "--study", "ex", "--budget", "16"])
    module.main()
    status = EvomergeClient(live_server.url).status("ex")
    assert status["complete"] and status["finished"] == 16 and status["failed"] == 0
    out = capsys.readouterr().out
    assert "16 evaluations" in out and "merge_method: ties" in out
