"""The ask/tell API: studies from configs, candidates never handed twice, bad tells refused with clear 4xx."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import optuna
import pytest

from evomerge.client import APIError, EvomergeClient
from evomerge.errors import ConfigError
from evomerge.server import is_loopback, serve
from evomerge.server.studies import study_dir

from .common import drive, score, zdt1_study


def test_two_concurrent_clients_drive_a_study_to_completion_and_no_trial_is_handed_twice(live_server, tmp_path):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("cc", "cma", evaluations=30))
    handed: list[int] = []
    told: dict[int, dict[str, float]] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            drive(EvomergeClient(live_server.url), "cc", handed, told)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(handed) == len(set(handed)) == 30
    status = client.status("cc")
    assert status["complete"] and status["finished"] == 30 and status["running"] == []
    stored = optuna.load_study(study_name="cc", storage=f"sqlite:///{tmp_path / 'studies' / 'cc' / 'study.db'}")
    assert {t.number: list(t.values) for t in stored.trials} == {n: [v["f1"], v["f2"]] for n, v in told.items()}


def test_a_generational_strategy_hands_out_at_most_one_generation_until_it_is_told(live_server):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("gen", "cma", evaluations=30))
    first = client.ask_raw("gen", 10)
    assert len(first["candidates"]) == 6  # popsize 6
    assert first["retry_after_s"] and "generation" in first["reason"]
    assert client.ask("gen", 1) == []
    client.tell("gen", first["candidates"][0], score(first["candidates"][0]))
    assert client.ask("gen", 1) == []  # still 5 of the generation out
    for cand in first["candidates"][1:]:
        client.tell("gen", cand, score(cand))
    assert len(client.ask("gen", 10)) == 6  # the next generation


def test_an_ask_with_wait_blocks_until_a_tell_frees_the_generation(live_server):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("wait", "cma", evaluations=30))
    gen = client.ask("wait", 6)
    got: list = []
    waiter = threading.Thread(target=lambda: got.extend(client.ask("wait", 2, wait_s=20)))
    waiter.start()
    for cand in gen:
        client.tell("wait", cand, score(cand))
    waiter.join(30)
    assert len(got) == 2


def test_async_strategies_hand_out_any_number(live_server):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("tpe", "random", evaluations=12))
    assert len(client.ask("tpe", 12)) == 12
    reply = client.ask_raw("tpe", 1)
    assert reply["candidates"] == [] and reply["reason"].startswith("budget reached")


def test_unknown_finished_and_foreign_tells_are_refused_with_clear_4xx(live_server):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("a", "random"))
    client.create_study(zdt1_study("b", "random", seed=9))
    a = client.ask("a", 1)[0]
    b = client.ask("b", 1)[0]
    with pytest.raises(APIError) as unknown:
        client.tell("a", {"trial": 99, "ticket": a["ticket"]}, score(a))
    assert unknown.value.status == 404 and "no trial 99" in str(unknown.value)
    with pytest.raises(APIError) as foreign:
        client.tell("a", {"trial": a["trial"], "ticket": b["ticket"]}, score(a))
    assert foreign.value.status == 403 and "ticket" in str(foreign.value)
    with pytest.raises(APIError) as wrong:
        client.tell("a", a, {"f1": 1.0})
    assert wrong.value.status == 422 and "missing ['f2']" in str(wrong.value)
    client.tell("a", a, score(a))
    with pytest.raises(APIError) as again:
        client.tell("a", a, score(a))
    assert again.value.status == 409 and "already told" in str(again.value)
    with pytest.raises(APIError) as missing:
        client.status("nope")
    assert missing.value.status == 404


def test_a_failure_is_told_and_recorded_failed(live_server):
    client = EvomergeClient(live_server.url)
    client.create_study(zdt1_study("f", "random"))
    cand = client.ask("f", 1)[0]
    out = client.tell("f", cand, error="the harness crashed")
    assert out["status"] == "failed"
    assert client.status("f")["failed"] == 1


def test_a_ps_study_over_model_names_gives_recipes_and_mergekit_yaml_without_reading_checkpoints(live_server):
    client = EvomergeClient(live_server.url)
    cfg = {"name": "ps", "space": {"kind": "ps", "method": "ties"},
           "sources": {"base": "org/base", "models": ["org/math", "org/lang"], "num_layers": 4},
           "strategy": {"name": "random"}, "objectives": [{"name": "acc", "direction": "maximize"}],
           "budget": {"evaluations": 4}}
    client.create_study(cfg)
    cand = client.ask("ps", 1)[0]
    assert cand["recipe"]["merge_method"] == "ties"
    assert [m["model"] for m in cand["recipe"]["models"]] == ["org/math", "org/lang"]
    client.tell("ps", cand, {"acc": 0.7})
    assert client.recipe("ps", cand["trial"]) == cand["recipe"]
    assert "merge_method: ties" in client.mergekit_yaml("ps", cand["trial"])
    assert client.front("ps")["front"][0]["trial"] == cand["trial"]
    with pytest.raises(APIError) as no_layers:
        client.create_study({**cfg, "name": "ps2", "sources": {"base": "b", "models": ["m1", "m2"]}})
    assert no_layers.value.status == 422 and "reads no checkpoint" in str(no_layers.value)


def test_study_names_cannot_leave_the_storage_folder(live_server, tmp_path):
    for bad in ("../x", "..", ".hidden", "a/b", "a\\b", "", "x" * 65):
        with pytest.raises(ConfigError):
            study_dir(tmp_path, bad)
    client = EvomergeClient(live_server.url)
    with pytest.raises(APIError) as exc:
        client.create_study(zdt1_study("..", "random"))
    assert exc.value.status == 422
    req = urllib.request.Request(live_server.url + "/studies/..%2F..%2Fetc/front")
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req)
    assert http.value.code in (404, 422)


def test_client_supplied_paths_and_storage_urls_are_not_accepted(live_server):
    client = EvomergeClient(live_server.url)
    for extra in ({"storage": "sqlite:////tmp/evil.db"}, {"output": "/tmp/evil"}, {"runner": {"type": "local"}}):
        with pytest.raises(APIError) as exc:
            client.create_study({**zdt1_study("p", "random"), **extra})
        assert exc.value.status == 422
    with pytest.raises(APIError) as preset:
        client.create_study({**zdt1_study("p", "random"), "space": "/etc/passwd"})
    assert preset.value.status == 422


def test_oversized_bodies_are_refused_with_413(live_server):
    import contextlib
    import http.client
    from urllib.parse import urlsplit

    body = json.dumps({**zdt1_study("big", "random"), "padding": "x" * (2 << 20)}).encode()
    url = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        # the server may answer 413 and close before the whole body is sent; its answer is still readable
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/studies", body=body, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_a_token_is_required_and_checked_when_set(tmp_path):
    from .conftest import ThreadServer

    server = ThreadServer(tmp_path / "s", token="s3cret-token-0123456789")
    try:
        assert EvomergeClient(server.url).health()  # health stays open
        with pytest.raises(APIError) as none:
            EvomergeClient(server.url).studies()
        assert none.value.status == 401
        with pytest.raises(APIError) as wrong:
            EvomergeClient(server.url, token="s3cret-token-0123456780").studies()
        assert wrong.value.status == 401
        assert EvomergeClient(server.url, token="s3cret-token-0123456789").studies() == []
    finally:
        server.stop()


def test_binding_beyond_loopback_requires_a_token(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ConfigError, match="token"):
        serve(tmp_path, host="0.0.0.0", port=1)  # refused before anything binds


def test_checkpoints_are_read_only_under_the_servers_models_root(tmp_path, family):
    from .conftest import ThreadServer

    base, experts = family
    cfg = {"name": "real", "space": {"kind": "ps", "method": "ties"},
           "sources": {"base": str(base), "models": [str(e) for e in experts[:2]]},
           "strategy": {"name": "random"}, "objectives": [{"name": "acc", "direction": "maximize"}],
           "budget": {"evaluations": 2}}
    allowed = ThreadServer(tmp_path / "a", models_root=base.parent)
    elsewhere = ThreadServer(tmp_path / "b", models_root=tmp_path / "b")
    try:
        EvomergeClient(allowed.url).create_study(cfg)  # layer counts read from the checkpoints
        assert EvomergeClient(allowed.url).ask("real", 1)[0]["recipe"]["base_model"] == str(base)
        with pytest.raises(APIError) as outside:
            EvomergeClient(elsewhere.url).create_study(cfg)
        assert outside.value.status == 422 and "outside the server's models root" in str(outside.value)
    finally:
        allowed.stop()
        elsewhere.stop()
