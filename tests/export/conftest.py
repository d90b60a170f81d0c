"""Runs to export: a PS search over a tiny Llama family scored by a function that ignores the model (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.study.config import RunConfig
from evomerge.study.study import Study


def ps_run(out: Path, family: tuple[Path, list[Path]], *, name: str = "ps", space: dict | None = None,
           evaluations: int = 12, **over) -> Study:
    base, experts = family
    data = {
        "name": name, "sources": {"base": str(base), "models": [str(e) for e in experts[:2]]},
        "space": space or {"kind": "ps", "method": "ties"},
        "strategy": {"name": "nsga2", "options": {"population_size": 6}},
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "budget": {"evaluations": evaluations}, "seed": 2, "output": str(out / name),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:zdt1"},
    }
    cfg = RunConfig.from_dict({**data, **over})
    study = Study.create(cfg)
    study.run()
    return study


def fake_test_scores(study: Study) -> dict[int, dict[str, float]]:
    """What ``Study.finalize`` records for a run with fitness tasks (a function runner has none): test scores."""
    archive, ok = study.archive()
    by_number = {r.number: r for r in ok}
    tests = {n: {k: v + 0.25 for k, v in by_number[n].objectives.items()} for n in archive.front}
    study.store.study.set_user_attr("test_results", {
        "split": "test", "baselines": {},
        "trials": {str(n): {"status": "ok", "objectives": t, "score": None, "error": None} for n, t in tests.items()},
    })
    return tests


@pytest.fixture(scope="module")
def ps_study(tmp_path_factory: pytest.TempPathFactory, family) -> tuple[Study, dict[int, dict[str, float]]]:
    study = ps_run(tmp_path_factory.mktemp("runs"), family)
    return study, fake_test_scores(study)
