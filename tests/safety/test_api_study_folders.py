"""Issue 12 #3 and #9 (tickets): POST /studies never deletes or overwrites what the server did not create;
a trial's ticket is a server-side random secret that survives a restart.

Before: a folder under the storage root without server.json was removed with shutil.rmtree (a user's
``precious/study.db`` vanished; with ``--storage runs`` creating ``demo`` wiped ``runs/demo``), and a ticket was
sha1(genome): anyone who saw the genome could tell for the trial.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from evomerge.client import APIError, EvomergeClient
from evomerge.server.studies import CREATING_FILE, SERVER_FILE, RemoteStudy
from evomerge.study.record import genome_key

from ..server.common import score, zdt1_study
from ..server.conftest import ThreadServer


@pytest.fixture
def root_server(tmp_path) -> Iterator[tuple]:
    root = tmp_path / "runs"
    root.mkdir()
    srv = ThreadServer(root)
    yield root, EvomergeClient(srv.url)
    srv.stop()


def test_creating_a_study_over_a_users_folder_is_409_and_leaves_it_intact(root_server):
    root, client = root_server
    (root / "precious").mkdir()
    (root / "precious" / "study.db").write_bytes(b"a week of trials")
    (root / "demo").mkdir()  # an `evomerge run` folder under `--storage runs`
    (root / "demo" / "config.yaml").write_text("name: demo\n")
    (root / "afile").write_text("not a folder")
    for name in ("precious", "demo", "afile"):
        with pytest.raises(APIError) as refused:
            client.create_study(zdt1_study(name))
        assert refused.value.status == 409 and "did not create" in str(refused.value)
    assert (root / "precious" / "study.db").read_bytes() == b"a week of trials"
    assert (root / "demo" / "config.yaml").read_text() == "name: demo\n"
    assert (root / "afile").read_text() == "not a folder"


def test_a_symlinked_name_is_refused_and_its_target_untouched(root_server, tmp_path):
    root, client = root_server
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    (root / "link").symlink_to(target)
    with pytest.raises(APIError) as refused:
        client.create_study(zdt1_study("link"))
    assert refused.value.status in (409, 422)
    assert (target / "keep.txt").read_text() == "keep"


def test_an_existing_study_is_409_and_keeps_its_trials(root_server):
    _root, client = root_server
    client.create_study(zdt1_study("mine", "random"))
    cand = client.ask("mine", 1)[0]
    client.tell("mine", cand, score(cand))
    with pytest.raises(APIError) as refused:
        client.create_study(zdt1_study("mine", "random"))
    assert refused.value.status == 409 and "already exists" in str(refused.value)
    assert client.status("mine")["finished"] == 1


def test_only_a_creation_the_server_marked_as_its_own_is_cleaned_up_after_a_crash(root_server):
    root, client = root_server
    half = root / "half"  # the server died mid-creation: marker written first, server.json never
    half.mkdir()
    (half / CREATING_FILE).write_text("evomerge serve: a study being created\n")
    (half / "study.db").write_bytes(b"half-written")
    assert client.create_study(zdt1_study("half", "random"))["name"] == "half"
    assert (half / SERVER_FILE).is_file() and not (half / CREATING_FILE).exists()
    assert "half" in client.studies()


def test_a_failed_creation_removes_only_the_folder_it_made(tmp_path, monkeypatch):
    from evomerge.server import studies

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(studies, "Study", broken)
    with pytest.raises(OSError, match="disk full"):
        RemoteStudy.create(tmp_path, zdt1_study("x"), {}, None)
    assert not (tmp_path / "x").exists()
    (tmp_path / "keep").mkdir()
    with pytest.raises(studies.ConflictError):
        RemoteStudy.create(tmp_path, zdt1_study("keep"), {}, None)
    assert (tmp_path / "keep").is_dir()


def test_a_ticket_is_a_random_secret_not_the_genomes_hash_and_it_survives_a_restart(tmp_path):
    study = RemoteStudy.create(tmp_path, zdt1_study("t", "cma"), {"lease_s": 0.01}, None)
    asked = study.ask(3)
    tickets = {a.ticket for a in asked}
    assert len(tickets) == 3 and len(min(tickets, key=len)) >= 32
    for a in asked:
        assert a.ticket != genome_key(a.genome) and genome_key(a.genome) not in a.ticket
    first = asked[0]
    with pytest.raises(Exception) as guessed:  # the genome's hash no longer opens the trial
        study.tell(first.trial, genome_key(first.genome), score(first.__dict__))
    assert type(guessed.value).__name__ == "ForbiddenError"
    reopened = RemoteStudy.open(tmp_path / "t")  # a restart: tickets come back from the storage
    time.sleep(0.05)
    again = {a.trial: a.ticket for a in reopened.ask(3)}  # leases ran out: the same trials, the same tickets
    assert again == {a.trial: a.ticket for a in asked}
    for a in asked:
        assert reopened.tell(a.trial, a.ticket, score(a.__dict__)).status == "ok"


def test_a_trial_asked_before_tickets_were_random_keeps_the_ticket_it_was_handed(tmp_path):
    study = RemoteStudy.create(tmp_path, zdt1_study("old", "random"), {}, None)
    genome = study.study.strategy.ask(1)[0]
    study.study.save_checkpoint()
    key = genome_key(genome)  # written as an older server did: no ticket attribute, the key was the ticket
    number = study.study.store.begin(key, genome, None, {"split": "train"})
    reopened = RemoteStudy.open(tmp_path / "old")
    assert reopened.tell(number, key, score({"genome": list(genome)})).status == "ok"


def test_a_served_study_folder_has_one_writer_the_server(root_server):
    """A study folder is also a run folder: while the server has it open, `evomerge resume` on it is refused."""
    import os
    import subprocess
    import sys

    root, client = root_server
    client.create_study(zdt1_study("served"))
    res = subprocess.run([sys.executable, "-m", "evomerge", "resume", str(root / "served")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 2, res.stderr
    assert f"pid {os.getpid()}" in res.stderr and "in use" in res.stderr
