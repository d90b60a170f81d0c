"""A throwaway PostgreSQL server on 127.0.0.1 for the storage tests (Debian's `postgresql` package).

``start()`` runs ``initdb`` into a fresh folder and ``pg_ctl start`` on a free loopback port, trusting
local connections (the server listens on 127.0.0.1 only and lives for one test session); as root it
runs them as the ``postgres`` user, since PostgreSQL refuses to run as root. ``unavailable()`` says
why there is no server to start, for a skip message.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

HOST = "127.0.0.1"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable() -> str | None:
    """Why a PostgreSQL test server cannot run here, or None."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install 'evomerge[postgres]')"
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "PostgreSQL server binaries not found (apt-get install -y postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="evomerge-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        res = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {res.stderr or res.stdout}")

    def start(self) -> str:
        """Start the server; returns the SQLAlchemy URL of an empty database ``evomerge``."""
        self._run(_bin("initdb") or "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        opts = f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories={self.dir} -c fsync=on"
        self._run(_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "start")
        import psycopg2

        con = psycopg2.connect(host=HOST, port=self.port, user="postgres", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE evomerge")
        con.close()
        return self.url("evomerge")

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{db}"

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def create_database(server: PostgresServer, name: str) -> str:
    """A fresh empty database on ``server``; its SQLAlchemy URL."""
    import psycopg2

    con = psycopg2.connect(host=HOST, port=server.port, user="postgres", dbname="postgres")
    con.autocommit = True
    con.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
    con.cursor().execute(f'CREATE DATABASE "{name}"')
    con.close()
    return server.url(name)


def trials(server: PostgresServer, db: str, study: str) -> list[tuple[str, str, tuple]]:
    """(genome key, state, values) of every trial of ``study``, in trial order, read with plain SQL."""
    import json

    import psycopg2

    con = psycopg2.connect(host=HOST, port=server.port, user="postgres", dbname=db)
    try:
        cur = con.cursor()
        try:
            cur.execute(
                "SELECT t.trial_id, t.state, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'key' "
                "WHERE s.study_name = %s ORDER BY t.number", (study,))
        except psycopg2.errors.UndefinedTable:  # the run has not created its tables yet
            return []
        out = []
        for trial_id, state, key in cur.fetchall():
            cur.execute("SELECT value FROM trial_values WHERE trial_id = %s ORDER BY objective", (trial_id,))
            out.append((json.loads(key), str(state), tuple(v for (v,) in cur.fetchall())))
        return out
    finally:
        con.close()
