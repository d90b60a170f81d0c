"""Pending asks survive a restart: the strategy checkpoint and the RUNNING trials are reconciled on open,
whichever step a crash interrupted."""

from __future__ import annotations

import numpy as np

from evomerge.exec.base import EvalResult
from evomerge.exec.synthetic import zdt1
from evomerge.server.studies import RemoteStudy, ticket_of
from evomerge.study.record import genome_key

CONFIG = {"name": "d", "space": {"kind": "box", "dim": 3}, "strategy": {"name": "cma", "options": {"popsize": 4}},
          "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
          "budget": {"evaluations": 12}}


def values(genome) -> dict[str, float]:
    return zdt1(np.asarray(genome))


def test_asked_trials_can_be_told_after_a_restart(tmp_path):
    first = RemoteStudy.create(tmp_path, CONFIG, {}, None)
    asked = first.ask(3)
    reopened = RemoteStudy.open(tmp_path / "d")  # a new process: nothing kept in memory
    assert sorted(reopened.status()["running"]) == [a.trial for a in asked]
    for a in asked:
        reopened.tell(a.trial, a.ticket, values(a.genome))
    rest = reopened.ask(4)
    assert len(rest) == 1  # the generation of 4 was 3 + 1: the strategy resumed mid-generation
    reopened.tell(rest[0].trial, rest[0].ticket, values(rest[0].genome))
    assert len(reopened.ask(4)) == 4  # and it completed the generation, so the next one is out


def test_a_crash_between_the_checkpoint_and_the_trial_rows_reissues_the_ask(tmp_path):
    study = RemoteStudy.create(tmp_path, CONFIG, {}, None)
    genomes = study.study.strategy.ask(2)
    study.study.save_checkpoint()  # ... and the process dies before the RUNNING trials are written
    reopened = RemoteStudy.open(tmp_path / "d")
    running = [reopened.trial(n) for n in reopened.status()["running"]]
    assert sorted(r.key for r in running) == sorted(genome_key(g) for g in genomes)
    for r in running:
        reopened.tell(r.number, ticket_of(r), values(r.genome))
    assert reopened.status()["finished"] == 2


def test_a_crash_between_the_storage_and_the_checkpoint_keeps_the_tell(tmp_path):
    study = RemoteStudy.create(tmp_path, CONFIG, {}, None)
    asked = study.ask(4)
    for a in asked[:3]:
        study.tell(a.trial, a.ticket, values(a.genome))
    last = asked[3]
    # the tell reaches the storage, then the process dies before the strategy learns it
    study.study.store.finish(last.trial, EvalResult(key=last.ticket, status="ok", objectives=values(last.genome)),
                             {"split": "train"})
    reopened = RemoteStudy.open(tmp_path / "d")
    assert reopened.status()["finished"] == 4 and reopened.status()["running"] == []
    assert reopened.study.strategy.pending() == []  # told from the record on open
    assert len(reopened.ask(4)) == 4  # so the next generation is already out
