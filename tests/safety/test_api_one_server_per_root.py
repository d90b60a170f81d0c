"""Issue 12 #2 and #9 (token, banner): one `evomerge serve` per storage root, refusals before any banner.

Before: two servers on one root both started and handed out the same genomes twice; a token of 16 spaces
or 'aaaaaaaaaaaaaaaa' was accepted on 0.0.0.0; the "API on http://..." banner came before any refusal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from evomerge.errors import ConfigError
from evomerge.server import StorageLockedError, check_token, lock_storage_root, serve

from ..server.conftest import HOST, ProcessServer, free_port


def _serve_cmd(root, port: int) -> list[str]:
    return [sys.executable, "-m", "evomerge.cli", "serve", "--storage", str(root), "--host", HOST, "--port", str(port)]


def test_a_second_server_on_the_same_root_refuses_to_start_naming_the_pid_and_a_kill_9_frees_the_root(tmp_path):
    root = tmp_path / "studies"
    first = ProcessServer(root, free_port())
    first.start()
    try:
        pid = first.proc.pid
        env = {k: v for k, v in os.environ.items() if k != "EVOMERGE_TOKEN"}
        second = subprocess.run(_serve_cmd(root, free_port()), capture_output=True, text=True, timeout=120, env=env)
        assert second.returncode == 2, (second.stdout, second.stderr)
        assert f"pid {pid}" in second.stderr and str(root) in second.stderr
        assert "API on http" not in second.stdout  # refused before the banner
        first.proc.send_signal(signal.SIGKILL)  # a crash: nobody unlocks by hand
        first.proc.wait(timeout=30)
        again = ProcessServer(root, free_port())
        again.start()  # the kernel dropped the dead server's lock
        again.kill()
    finally:
        first.kill()


def test_the_root_lock_is_exclusive_within_a_process_too_and_released_on_exit(tmp_path):
    with lock_storage_root(tmp_path), pytest.raises(StorageLockedError, match=f"pid {os.getpid()}"):
        lock_storage_root(tmp_path)
    with lock_storage_root(tmp_path):  # released by the with: taken again
        pass


@pytest.mark.parametrize("token", [" " * 16, "aaaaaaaaaaaaaaaa", "abababababababababab", "good-token with space1",
                                   "é" * 4 + "0123456789abcdef"])
def test_a_weak_token_is_refused_on_a_network_bind_saying_how_to_make_a_good_one(token):
    with pytest.raises(ConfigError, match=r"secrets\.token_urlsafe\(32\)"):
        check_token(token, exposed=True)


def test_a_strong_token_passes_and_loopback_keeps_only_the_length_rule():
    import secrets

    check_token(secrets.token_urlsafe(32), exposed=True)
    check_token("aaaaaaaaaaaaaaaa", exposed=False)  # loopback: nobody on the network can try tokens
    with pytest.raises(ConfigError, match="at least 16"):
        check_token("short", exposed=False)


def test_the_refusal_is_printed_before_any_banner_and_nothing_binds(tmp_path, monkeypatch, capsys):
    import uvicorn

    from evomerge import cli

    def must_not_bind(*args, **kwargs):
        raise AssertionError("the server was started despite a refused token")

    monkeypatch.setattr(uvicorn, "run", must_not_bind)
    monkeypatch.setattr(sys, "argv", ["evomerge", "serve", "--storage", str(tmp_path), "--host", "0.0.0.0",
                                      "--port", "1", "--token", "aaaaaaaaaaaaaaaa"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "API on http" not in captured.out + captured.err
    assert "token_urlsafe" in captured.err
    with pytest.raises(ConfigError):  # the library entry point refuses the same way
        serve(tmp_path, host="0.0.0.0", port=1, token=" " * 16)
