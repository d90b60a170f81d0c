"""Subprocess entry point: start evomerge's local Ray the way the CLI does, print where its processes listen.

Run with a clean environment (no RAY_* variables), so it sees what a user's process sees;
``--import-ray-first`` imports Ray before evomerge, as a notebook that used Ray earlier would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

if "--import-ray-first" in sys.argv:
    import ray  # noqa: F401

import psutil

from evomerge.exec.ray_runner import RayRunner

runner = RayRunner(target="evomerge.exec.synthetic:sphere", workers=1)
try:
    runner.wait_ready(60)
    time.sleep(3)  # the dashboard and runtime-env agents bind after the raylet
    pids = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = sorted({line.split()[3].rsplit(":", 1)[0].strip("[]") for line in out.splitlines()
                    if any(f"pid={pid}," in line for pid in pids)})
    print(json.dumps(found))
finally:
    runner.close()
