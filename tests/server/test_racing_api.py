"""Racing over the HTTP API: a client reports staged scores, is told to stop hopeless candidates, and the
stopped ones are recorded PRUNED with their intermediate values; bad stage reports are refused with 4xx."""

from __future__ import annotations

import zlib

import numpy as np
import optuna
import pytest

from evomerge.client import APIError, EvomergeClient

N = 240


def _scores(genome: list[float]) -> np.ndarray:
    """A candidate's per-example 0/1 scores: accuracy 0.9 near x = 0.3, falling off quickly away from it."""
    g = np.asarray(genome)
    p = float(np.clip(0.9 - 2.0 * np.abs(g - 0.3).sum(), 0.02, 0.9))
    rng = np.random.default_rng(zlib.crc32(g.tobytes()))
    return (rng.random(N) < p).astype(float)


def _study(name: str) -> dict:
    return {"name": name, "space": {"kind": "box", "dim": 2}, "strategy": {"name": "tpe"},
            "objectives": [{"name": "acc", "direction": "maximize"}], "budget": {"evaluations": 16}, "seed": 2,
            "racing": {"stages": [0.125, 0.25, 0.5, 1.0], "confidence": 0.9, "test": "normal",
                       "examples": {"acc": N}, "score_range": {"acc": [0, 1]}}}


def test_a_client_reporting_stages_is_told_to_stop_and_the_trial_is_recorded_pruned(live_server, tmp_path):
    client = EvomergeClient(live_server.url)
    client.create_study(_study("raced"))
    layout = client.racing("raced")
    order, counts = np.asarray(layout["order"]["acc"]), layout["counts"]["acc"]
    assert sorted(order.tolist()) == list(range(N)) and counts == [30, 60, 120, 240]
    stopped = []
    while not client.status("raced")["complete"]:
        for cand in client.ask("raced", 1):
            scores = _scores(cand["genome"])
            for s in range(3):
                new = order[(counts[s - 1] if s else 0):counts[s]]
                reply = client.stage("raced", cand, s, {"acc": scores[new].tolist()})
                if reply["stop"]:
                    stopped.append((cand, s))
                    assert reply["status"] == "pruned" and reply["reason"].startswith("bound (normal): after")
                    break
            else:
                client.tell("raced", cand, {"acc": float(scores.mean())}, per_example={"acc": scores.tolist()})
    status = client.status("raced")
    assert stopped and status["pruned"] == len(stopped) and status["failed"] == 0
    cand, s = stopped[0]
    with pytest.raises(APIError) as err:  # a stopped trial takes no more stages, nor a tell
        client.stage("raced", cand, s + 1, {"acc": [1.0] * (counts[s + 1] - counts[s])})
    assert err.value.status == 409
    with pytest.raises(APIError) as err:
        client.tell("raced", cand, {"acc": 1.0}, per_example={"acc": [1.0] * N})
    assert err.value.status == 409
    storage = f"sqlite:///{tmp_path / 'studies' / 'raced' / 'study.db'}"
    trials = {t.number: t for t in optuna.load_study(study_name="raced", storage=storage).get_trials()}
    t = trials[cand["trial"]]
    assert t.state == optuna.trial.TrialState.PRUNED and sorted(t.intermediate_values) == counts[: s + 1]
    assert t.user_attrs["examples_scored"] == counts[s] and t.user_attrs["race_references"]
    scores = _scores(cand["genome"])
    assert t.user_attrs["per_example"]["acc"] == scores[np.sort(order[:counts[s]])].tolist()
    assert t.intermediate_values[counts[s]] == pytest.approx(scores[order[:counts[s]]].mean())


def test_bad_stage_reports_and_tells_are_refused(live_server):
    client = EvomergeClient(live_server.url)
    bad = _study("bad")
    bad["racing"]["examples"] = {"other": N}
    with pytest.raises(APIError) as err:
        client.create_study(bad)
    assert err.value.status == 422 and "racing.examples" in str(err.value.detail)
    client.create_study(_study("raced2"))
    cand = client.ask("raced2", 1)[0]
    for stage, scores, code in [(1, [1.0] * 30, 409), (0, [1.0] * 29, 422), (0, [2.0] * 30, 422), (3, [1.0], 422)]:
        with pytest.raises(APIError) as err:
            client.stage("raced2", cand, stage, {"acc": scores})
        assert err.value.status == code, (stage, err.value.detail)
    with pytest.raises(APIError) as err:  # a raced study's tell carries every per-example score
        client.tell("raced2", cand, {"acc": 0.5})
    assert err.value.status == 422 and "per_example.acc" in str(err.value.detail)
