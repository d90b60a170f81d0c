"""Ray for the exec tests: loopback only, small, and always torn down.

The environment variables are set when this file is imported, before any Ray
process can start: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every Ray
socket on 127.0.0.1 and usage statistics stay off. ``local_ray`` shares one
small local instance between tests; the cluster tests stop it first (a driver
talks to one Ray at a time) and it restarts on the next request.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib puts no test folder on sys.path
import ray_targets
from ray import cloudpickle
from ray_helpers import OBJECT_STORE

cloudpickle.register_pickle_by_value(ray_targets)  # the actors need not import it


class _RayHolder:
    """The shared local instance: started on first use, stopped on request or at the end of the session."""

    started = False

    def ensure(self) -> None:
        import ray

        from evomerge.exec.ray_setup import connect

        if ray.is_initialized():
            return
        for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):
            os.environ.pop(key, None)  # connect() must set them itself (the loopback test checks that)
        connect(None, num_cpus=2, object_store_memory=OBJECT_STORE, log_to_driver=False)
        self.started = True

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.started = False


_holder = _RayHolder()


@pytest.fixture(scope="session", autouse=True)
def _ray_teardown() -> Iterator[None]:
    try:
        yield
    finally:
        _holder.stop()


@pytest.fixture
def local_ray() -> _RayHolder:
    """A running local (loopback-only) Ray instance, 2 CPUs, 150 MB object store."""
    _holder.ensure()
    return _holder


@pytest.fixture
def no_ray() -> _RayHolder:
    """No Ray connection in this process (stops the shared local instance)."""
    _holder.stop()
    return _holder
