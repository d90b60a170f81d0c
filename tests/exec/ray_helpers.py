"""Constants and checks shared by the Ray tests (a plain module: conftest is not meant to be imported)."""

from __future__ import annotations

import subprocess

OBJECT_STORE = 150 * 2**20
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses on which any of ``pids`` listens (TCP), from ``ss``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            local = line.split()[3]
            found.add(local.rsplit(":", 1)[0].strip("[]"))
    return found
