"""A Ray worker slot's state machine, driven by hand on a made-up clock (no Ray): phases, statuses, due times."""

from __future__ import annotations

import math

from evomerge.exec.ray_slots import MAX_FAILED_STARTS, RESTART_BACKOFF_S, Slot

INFO = {"node_id": "n1", "node_ip": "127.0.0.1", "pid": 42, "memory": {"rss": 1}, "resident_bytes": 8,
        "shared_sources": True}


def test_a_slot_loads_then_is_idle_or_busy_and_a_loss_re_creates_it_at_once():
    slot = Slot("ray-0", actor="a0", probe="p0", now=100.0, startup_timeout_s=30.0)
    assert (slot.phase, slot.status, slot.due) == ("loading", "starting", 130.0) and slot.coming
    slot.loaded(INFO)
    assert (slot.phase, slot.status, slot.due, slot.probe) == ("live", "idle", math.inf, None)
    assert slot.snapshot().pid == 42 and slot.state.restarts == 0  # the first load is no restart
    slot.running.append("call")
    assert slot.status == "busy" and slot.snapshot().status == "busy"
    slot.lost("RayActorError: killed", now=200.0)
    assert (slot.phase, slot.status, slot.due) == ("waiting", "restarting", 200.0) and not slot.running
    slot.recreated("a1", "p1", now=200.5, startup_timeout_s=30.0)
    assert (slot.phase, slot.status, slot.due, slot.actor, slot.created) == ("loading", "restarting", 230.5, "a1", 1)
    slot.loaded({**INFO, "pid": 43})
    assert slot.status == "idle" and slot.state.restarts == 1 and slot.state.pid == 43
    assert slot.state.last_error == "RayActorError: killed"  # kept for the display


def test_failed_starts_back_off_doubling_up_to_the_cap_and_the_slot_is_given_up_after_max_failed_starts():
    slot = Slot("ray-1", actor="a0", probe="p0", now=0.0, startup_timeout_s=10.0)
    slot.loaded(INFO)
    slot.lost("lost", now=0.0)
    waits = []
    now = 0.0
    for attempt in range(1, MAX_FAILED_STARTS + 1):
        slot.recreated(f"a{attempt}", f"p{attempt}", now=now, startup_timeout_s=10.0)
        slot.start_failed("no answer", now=now)
        if slot.phase == "dead":
            break
        waits.append(slot.due - now)
        now = slot.due
    first, cap = RESTART_BACKOFF_S
    assert waits == [min(cap, first * 2**k) for k in range(MAX_FAILED_STARTS - 1)]
    assert (slot.phase, slot.status, slot.due, slot.probe) == ("dead", "dead", math.inf, None) and not slot.coming
    assert slot.state.last_error == f"restart {MAX_FAILED_STARTS} failed: no answer"


def test_a_successful_start_resets_the_failed_start_count():
    slot = Slot("ray-2", actor="a0", probe="p0", now=0.0, startup_timeout_s=10.0)
    slot.loaded(INFO)
    for round_ in range(3):  # more failed starts in all than MAX_FAILED_STARTS, never that many in a row
        slot.lost("lost", now=0.0)
        for _ in range(MAX_FAILED_STARTS - 1):
            slot.recreated("a", "p", now=0.0, startup_timeout_s=10.0)
            slot.start_failed("died", now=0.0)
        slot.recreated("a", "p", now=0.0, startup_timeout_s=10.0)
        slot.loaded(INFO)
        assert slot.live and slot.state.restarts == round_ + 1


def test_giving_up_records_the_workers_own_error():
    slot = Slot("ray-3", actor="a0", probe="p0", now=0.0, startup_timeout_s=10.0)
    slot.loaded(INFO)
    slot.lost("lost", now=1.0)
    slot.recreated("a1", "p1", now=1.0, startup_timeout_s=10.0)
    slot.give_up("CheckpointError: does not fit", error="CheckpointError: does not fit")
    assert slot.status == "dead" and slot.state.last_error == "CheckpointError: does not fit"
