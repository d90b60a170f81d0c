"""Servers for the API tests: uvicorn on 127.0.0.1 only, in a thread or in a subprocess (to kill and restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no server answered at {url}")


class ThreadServer:
    """The app under uvicorn in a daemon thread (fast; for tests that need no restart)."""

    def __init__(self, root: Path, **settings) -> None:
        import uvicorn

        from evomerge.server import ServerSettings, create_app

        app = create_app(ServerSettings(root=root, **settings))
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ProcessServer:
    """`evomerge serve` as a subprocess on a fixed port, so it can be killed and started again."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("EVOMERGE_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "serve", "--storage", str(self.root),
                                      "--host", HOST, "--port", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_healthy(self.url)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing gets flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(tmp_path / "studies")
    yield server
    server.stop()
