"""`evomerge serve`: a black-box scoring service (ask for candidate recipes over HTTP, tell their scores).

``serve(root, host, port, token=...)`` runs the FastAPI app of ``evomerge.server.app`` with uvicorn.
It binds 127.0.0.1 unless told otherwise, and refuses any other address without a bearer token.
One server process per storage root: studies are opened once and serialised by an in-process lock.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from evomerge.errors import ConfigError
from evomerge.server.app import MAX_BODY_BYTES, ServerSettings, create_app

__all__ = ["MAX_BODY_BYTES", "ServerSettings", "create_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(root: str | Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          models_root: str | Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
          database: str | None = None) -> None:
    """Run the API until interrupted. A non-loopback ``host`` needs ``token`` (clients send it as a bearer)."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ConfigError(f"binding {host} exposes the API beyond this machine: give a token (--token or "
                          "EVOMERGE_TOKEN), or bind 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ConfigError("the token must be at least 16 characters (e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe())'`)")
    settings = ServerSettings(root=Path(root), token=token, max_body_bytes=max_body_bytes,
                              models_root=Path(models_root) if models_root else None, database=database)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
