"""A private PostgreSQL server for the session, or a skip that says why there is none."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib puts no test folder on sys.path
from postgres_server import PostgresServer, unavailable


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # CI sets EVOMERGE_REQUIRE_POSTGRES=1: there a missing server is a failure, not a skip
    required = os.environ.get("EVOMERGE_REQUIRE_POSTGRES") == "1"
    reason = unavailable()
    if reason is not None:
        if required:
            pytest.fail(f"EVOMERGE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(f"no PostgreSQL server for this test: {reason}")
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:  # a server that cannot start here is a skip, with its own message
        server.stop()
        if required:
            raise
        pytest.skip(f"PostgreSQL did not start: {exc}")
    yield server
    server.stop()
