"""The FastAPI app of `evomerge serve`: create studies, ask candidates, tell scores, read the front.

Thin: every route validates its body (pydantic), calls one method of a RemoteStudy and maps our
exceptions to HTTP codes (ConfigError 422, NotFound 404, Conflict 409, Forbidden 403). Security
lives here too: a bearer token compared in constant time, a body-size limit enforced on the bytes
actually received (not only the declared Content-Length).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evomerge.errors import ConfigError, EvomergeError
from evomerge.server.schemas import AskIn, AskOut, Candidate, MergekitOut, StudyCreate, TellIn, TrialOut
from evomerge.server.studies import (
    NAME_PATTERN,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RemoteStudy,
    StudyRegistry,
)
from evomerge.study.record import TrialRecord

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a study config or a tell is a few KB
_bearer = HTTPBearer(auto_error=False)
Name = Annotated[str, PathParam(pattern=NAME_PATTERN, description="study name")]
Number = Annotated[int, PathParam(ge=0, le=10**9, description="trial number")]


def authorize(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Every route but /health needs the server's token when it has one (constant-time comparison)."""
    expected: bytes | None = request.app.state.token
    if expected is None:
        return
    given = creds.credentials.encode() if creds is not None else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


@dataclass
class ServerSettings:
    root: Path
    token: str | None = None
    models_root: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_studies: int = 1000
    database: str | None = None  # SQLAlchemy URL for the studies' trials (e.g. PostgreSQL); None: sqlite per study


class BodyLimit:
    """ASGI middleware: 413 when a request body exceeds ``limit`` bytes, declared or streamed (chunked)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send)
                    return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        body = b'{"detail":"request body too large"}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _trial_out(r: TrialRecord) -> TrialOut:
    return TrialOut(trial=r.number, status=r.status, objectives=r.objectives,
                    genome=None if r.genome is None else [float(x) for x in r.genome], recipe=r.recipe)


def create_app(settings: ServerSettings) -> FastAPI:
    """The API over the studies under ``settings.root``; a token, when set, is required on every route but /health."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    registry = StudyRegistry(settings.root, settings.models_root, settings.max_studies, settings.database)
    app = FastAPI(title="evomerge", version="1", description="Ask/tell model-merge search with client-side scoring.")
    app.state.token = settings.token.encode() if settings.token else None
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    auth = [Depends(authorize)]

    for exc_type, code in ((ConfigError, 422), (NotFoundError, 404), (ConflictError, 409), (ForbiddenError, 403),
                           (EvomergeError, 422)):
        def handler(request: Request, exc: Exception, code: int = code) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=code)

        app.add_exception_handler(exc_type, handler)

    def study(name: str) -> RemoteStudy:
        return registry.get(name)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/studies", dependencies=auth)
    def list_studies() -> list[str]:
        return registry.names()

    @app.post("/studies", status_code=201, dependencies=auth)
    def create_study(body: StudyCreate) -> dict[str, Any]:
        """Create a study; the reply is its status. Scores come from clients: no runner, no checkpoint read."""
        for k, v in body.strategy.options.items():
            if k in ("popsize", "batch_size", "n_startup_trials") and isinstance(v, int | float) and v > 4096:
                raise ConfigError(f"strategy.options.{k}: at most 4096 on this server")
        if body.space.get("kind") == "box" and not (isinstance(body.space.get("dim"), int)
                                                   and 1 <= body.space["dim"] <= 256):
            raise ConfigError("space.dim: a box space needs an integer dim in 1..256")
        data = body.model_dump(exclude={"sources", "lease_s"})
        extras: dict[str, Any] = {"lease_s": body.lease_s}
        if body.sources is not None:
            data["sources"] = {"base": body.sources.base, "models": body.sources.models}
            extras["num_layers"] = body.sources.num_layers
        try:
            created = registry.create(data, extras)
        except EvomergeError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # a strategy option of the wrong type, ...
            raise ConfigError(f"invalid study config: {exc}") from None
        return created.status()

    @app.get("/studies/{name}", dependencies=auth)
    def get_status(name: Name) -> dict[str, Any]:
        return study(name).status()

    @app.post("/studies/{name}/ask", dependencies=auth)
    def ask(name: Name, body: AskIn) -> AskOut:
        """Up to ``n`` candidates; fewer when a generational strategy's generation is all handed out."""
        s = study(name)
        got = s.ask(body.n, body.wait_s)
        reason = s.shortfall() if len(got) < body.n else None
        return AskOut(candidates=[Candidate(**a.__dict__) for a in got], complete=s.complete,
                      retry_after_s=None if len(got) == body.n or s.complete else 1.0, reason=reason)

    @app.post("/studies/{name}/trials/{number}/tell", dependencies=auth)
    def tell(name: Name, number: Number, body: TellIn) -> TrialOut:
        """Record the client's scores (or ``error``) for a trial it was handed, with that trial's ticket."""
        record = study(name).tell(number, body.ticket, body.objectives, error=body.error, per_example=body.per_example,
                                  worker=body.worker, seconds=body.seconds)
        return _trial_out(record)

    @app.get("/studies/{name}/trials/{number}", dependencies=auth)
    def get_trial(name: Name, number: Number) -> TrialOut:
        return _trial_out(study(name).trial(number))

    @app.get("/studies/{name}/front", dependencies=auth)
    def front(name: Name) -> dict[str, Any]:
        return study(name).front()

    @app.get("/studies/{name}/trials/{number}/recipe", dependencies=auth)
    def recipe(name: Name, number: Number) -> dict[str, Any]:
        r = study(name).trial(number)
        if r.recipe is None:
            raise NotFoundError(f"trial {number} has no recipe (a box space scores genomes directly)")
        return r.recipe

    @app.get("/studies/{name}/trials/{number}/mergekit", dependencies=auth)
    def mergekit(name: Name, number: Number) -> MergekitOut:
        """The trial's recipe as a mergekit YAML; 422 listing the reasons when mergekit cannot express it."""
        from evomerge.recipe.mergekit import to_mergekit
        from evomerge.recipe.model import Recipe

        r = study(name).trial(number)
        if r.recipe is None:
            raise NotFoundError(f"trial {number} has no recipe (a box space scores genomes directly)")
        export = to_mergekit(Recipe.model_validate(r.recipe))
        return MergekitOut(yaml=export.to_yaml(), warnings=export.warnings)

    return app
