"""Starting or joining Ray safely: loopback-only by default, clear errors instead of hangs.

A Ray instance evomerge starts for itself must not be reachable from the
network: on these machines Ray takes the external interface and listens on
0.0.0.0 even when told 127.0.0.1, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
is in the environment before it starts (then every socket binds 127.0.0.1).
Ray reads that variable once, when it is imported, so we set it before
importing Ray and, when Ray was imported earlier, overrule the constant it
derived. We also set ``RAY_USAGE_STATS_ENABLED=0`` (no usage report leaves the
machine), and start no dashboard. Going wider is the user's explicit choice:
start a cluster (``ray start --head``) and give its address.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any

from evomerge.errors import ConfigError

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
DEFAULT_CLIENT_PORT = 10001  # ray:// (Ray Client)
DEFAULT_GCS_PORT = 6379


def loopback_environment() -> None:
    """Make every Ray process started from here on bind 127.0.0.1 and report nothing home."""
    os.environ.update(LOOPBACK_ENV)


def _loopback_in_this_process() -> None:
    """Ray imported before we set the environment has already decided to use the external interface:
    overrule that decision (a module constant read when the node's address is chosen)."""
    try:
        from ray._private import ray_constants
    except ImportError:  # private module moved: the environment variable is all we can do
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address, or None for 'auto' without a known cluster."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address("auto")
        except Exception:  # private API or no current cluster: let ray.init say so
            return None
        if not resolved:
            return None
        address = resolved
    default = DEFAULT_GCS_PORT
    if address.startswith("ray://"):
        address, default = address.removeprefix("ray://"), DEFAULT_CLIENT_PORT
    address = address.split("/", 1)[0]
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"runner.address '{address}': the port '{port}' is not a number") from None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail within ``timeout_s`` when nothing listens at ``address`` (ray.init would retry for minutes)."""
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"runner.address '{address}': no Ray cluster answers at {host}:{port} ({exc}). Start one with "
            "`ray start --head` on that machine, check the address and firewall, or leave runner.address "
            "empty to start a local, loopback-only Ray instance."
        ) from None


def connect(address: str | None, *, num_cpus: float, num_gpus: float | None = None,
            object_store_memory: int | None = None, log_to_driver: bool = False,
            connect_timeout_s: float = 5.0) -> bool:
    """Join the cluster at ``address`` or start a private local instance; True when we started it.

    A process already connected to Ray keeps its connection (tests and
    notebooks that called ``ray.init`` themselves).
    """
    if address is None:
        loopback_environment()  # before `import ray` (Ray reads it once, at import) and for what ray.init spawns
    import ray

    if address is not None:
        check_reachable(address, connect_timeout_s)
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": log_to_driver, "logging_level": logging.WARNING}
    if address is None:
        _loopback_in_this_process()  # in case Ray was imported before we set the environment
        try:
            ray.init(num_cpus=max(math.ceil(num_cpus), os.cpu_count() or 1), num_gpus=num_gpus,
                     object_store_memory=object_store_memory, include_dashboard=False, **quiet)
        except Exception as exc:
            raise ConfigError(f"could not start a local Ray instance: {exc}") from exc
        return True
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"runner.address '{address}': could not join the Ray cluster: {exc}") from None
    return False


def _node_summary(nodes: list[dict[str, Any]], key: str) -> str:
    return ", ".join(f"{n.get('NodeManagerAddress', '?')}: {n['Resources'].get(key, 0):g}" for n in nodes) or "none"


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Refuse a worker pool the cluster can never place (Ray would leave the actors pending forever)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for key, per_worker in (("GPU", gpus_per_worker), ("CPU", cpus_per_worker)):
        if per_worker <= 0:
            continue
        total = sum(n["Resources"].get(key, 0) for n in nodes)
        need = workers * per_worker
        largest = max((n["Resources"].get(key, 0) for n in nodes), default=0)
        if need > total + 1e-9 or per_worker > largest + 1e-9:
            raise ConfigError(
                f"runner asks for {workers} worker(s) x {per_worker:g} {key} = {need:g} {key}(s), but the Ray "
                f"cluster has {total:g} {key}(s) in all (per node: {_node_summary(nodes, key)}); lower "
                f"runner.workers or runner.{key.lower()}s_per_worker, or add nodes"
            )
