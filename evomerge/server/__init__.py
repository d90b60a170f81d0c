"""`evomerge serve`: a black-box scoring service (ask for candidate recipes over HTTP, tell their scores).

``serve(root, host, port, token=...)`` runs the FastAPI app of ``evomerge.server.app`` with uvicorn.
It binds 127.0.0.1 unless told otherwise, and refuses any other address without a strong bearer token.
One server process per storage root (an OS lock on a file in the root, see ``rootlock``): studies are
opened once and serialised by an in-process lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

from evomerge.errors import ConfigError
from evomerge.server.app import MAX_BODY_BYTES, ServerSettings, create_app
from evomerge.server.rootlock import StorageLockedError, lock_storage_root

__all__ = ["MAX_BODY_BYTES", "ServerSettings", "StorageLockedError", "check_token", "create_app", "is_loopback",
           "lock_storage_root", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 16
MIN_TOKEN_DISTINCT = 8
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_token(token: str, *, exposed: bool) -> None:
    """Refuse a token a client could not send in a header or, when the API is reachable from the network, guess.

    ``exposed``: the server binds beyond loopback, where anyone on the network may try tokens.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the token must be at least {MIN_TOKEN_CHARS} characters; make one with `{MAKE_TOKEN}`")
    if not exposed:
        return
    if any(not ("!" <= ch <= "~") for ch in token):
        raise ConfigError("the token holds whitespace or characters outside printable ASCII, which a bearer header "
                          f"cannot carry reliably; make one with `{MAKE_TOKEN}`")
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        raise ConfigError(f"the token uses only {len(set(token))} distinct characters: guessable on a network-facing "
                          f"server; make one with `{MAKE_TOKEN}`")


def serve(root: str | Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          models_root: str | Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
          on_ready: Callable[[], None] | None = None, database: str | None = None) -> None:
    """Run the API until interrupted. A non-loopback ``host`` needs a strong ``token`` (clients send it as a bearer).

    Every refusal (token, a storage root another server holds) is raised before ``on_ready`` (the banner) runs.
    ``database``: an SQLAlchemy URL that holds the studies' trials instead of each study folder's sqlite file.
    """
    import uvicorn

    exposed = not is_loopback(host)
    if exposed and not token:
        raise ConfigError(f"binding {host} exposes the API beyond this machine: give a token (--token or "
                          f"EVOMERGE_TOKEN; make one with `{MAKE_TOKEN}`), or bind 127.0.0.1")
    if token is not None:
        check_token(token, exposed=exposed)
    settings = ServerSettings(root=Path(root), token=token, max_body_bytes=max_body_bytes,
                              models_root=Path(models_root) if models_root else None, database=database)
    with lock_storage_root(settings.root):
        app = create_app(settings)
        if on_ready is not None:
            on_ready()
        uvicorn.run(app, host=host, port=port, log_level="warning")
