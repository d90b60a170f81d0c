"""The FastAPI app of `evomerge serve`: create studies, ask candidates, tell scores, read the front.

Thin: every route validates its body (pydantic), calls one method of a RemoteStudy and maps our
exceptions to HTTP codes (ConfigError 422, NotFound 404, Conflict 409, Forbidden 403), each listed
in the OpenAPI document with the body it really has. Security lives here too: a bearer token
compared in constant time, a body-size limit enforced on the bytes actually received (not only the
declared Content-Length; a chunked body over it is 413 too).

An ask that waits for a tell (``wait_s``) holds no worker thread: it awaits an asyncio event that
every tell of its study sets, so any number of waiting clients leave the API (``/health`` too)
answering at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evomerge.errors import ConfigError, EvomergeError
from evomerge.server.schemas import (
    AskIn,
    AskOut,
    Candidate,
    ErrorOut,
    MergekitOut,
    StageIn,
    StageOut,
    StudyCreate,
    TellIn,
    TrialOut,
    ValidationErrorOut,
)
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
        # Read the whole body here (it is bounded by the limit), so the refusal is ours to send: an error raised
        # while the app reads it would come back as FastAPI's 400 "error parsing the body".
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _reject(self, send: Any) -> None:
        body = b'{"detail":"request body too large"}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _finite_json(value: Any) -> Any:
    """``value`` with every NaN/Infinity replaced by its JSON-ish spelling as a string (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing the field errors; the echoed input is made serialisable (a NaN sent in must not become a 500)."""
    return JSONResponse({"detail": _finite_json(jsonable_encoder(exc.errors()))}, status_code=422)


class TellSignal:
    """Wakes the asks waiting on a study when a tell lands there (tells run in worker threads, asks on the loop)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}

    def event(self, study: str) -> asyncio.Event:
        """The event the next tell to ``study`` sets; take it *before* asking, so no tell slips in between."""
        self.loop = asyncio.get_running_loop()
        return self._events.setdefault(study, asyncio.Event())

    def told(self, study: str) -> None:
        """Called from any thread after a tell; a no-op while nobody has waited yet."""
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the server has stopped: nobody is waiting any more
                self.loop.call_soon_threadsafe(self._fire, study)

    def _fire(self, study: str) -> None:
        event = self._events.pop(study, None)
        if event is not None:
            event.set()


def _errors(*codes: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the refusals a route can give (413 applies to every route, 401 to all behind the token)."""
    described = {401: "missing or wrong bearer token", 403: "the trial was not handed out with this ticket",
                 404: "no such study or trial", 409: "conflicts with the study's state (exists, already told)",
                 413: "request body over the server's limit",
                 422: "the request fails validation, or the study refuses the value"}
    return {c: {"model": ValidationErrorOut if c == 422 else ErrorOut, "description": described[c]}
            for c in sorted({413, *([401] if auth else []), *codes})}


def _trial_out(r: TrialRecord) -> TrialOut:
    """A trial as the API shows it; a non-finite score told for a failed trial is left out (JSON has no NaN)."""
    return TrialOut(trial=r.number, status=r.status,
                    objectives={k: v for k, v in r.objectives.items() if math.isfinite(v)},
                    genome=None if r.genome is None else [float(x) for x in r.genome], recipe=r.recipe)


def create_app(settings: ServerSettings) -> FastAPI:
    """The API over the studies under ``settings.root``; a token, when set, is required on every route but /health."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal = TellSignal()
    registry = StudyRegistry(settings.root, settings.models_root, settings.max_studies, on_tell=signal.told,
                             database=settings.database)
    app = FastAPI(title="evomerge", version="1", description="Ask/tell model-merge search with client-side scoring.")
    app.state.token = settings.token.encode() if settings.token else None
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    auth = [Depends(authorize)]

    for exc_type, code in ((ConfigError, 422), (NotFoundError, 404), (ConflictError, 409), (ForbiddenError, 403),
                           (EvomergeError, 422)):
        def handler(request: Request, exc: Exception, code: int = code) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=code)

        app.add_exception_handler(exc_type, handler)
    app.add_exception_handler(RequestValidationError, _validation_error)

    def study(name: str) -> RemoteStudy:
        return registry.get(name)

    @app.get("/health", responses=_errors(auth=False))
    async def health() -> dict[str, str]:
        """Liveness; open without a token. Async: it needs no worker thread, so busy threads never delay it."""
        return {"status": "ok"}

    @app.get("/studies", dependencies=auth, responses=_errors())
    def list_studies() -> list[str]:
        return registry.names()

    @app.post("/studies", status_code=201, dependencies=auth, responses=_errors(409, 422))
    def create_study(body: StudyCreate) -> dict[str, Any]:
        """Create a study; the reply is its status. Scores come from clients: no runner, no checkpoint read."""
        for k, v in body.strategy.options.items():
            if k in ("popsize", "batch_size", "n_startup_trials") and isinstance(v, int | float) and v > 4096:
                raise ConfigError(f"strategy.options.{k}: at most 4096 on this server")
        if body.space.get("kind") == "box" and not (isinstance(body.space.get("dim"), int)
                                                   and 1 <= body.space["dim"] <= 256):
            raise ConfigError("space.dim: a box space needs an integer dim in 1..256")
        data = body.model_dump(exclude={"sources", "lease_s", "racing"})
        extras: dict[str, Any] = {"lease_s": body.lease_s}
        if body.racing is not None:  # kept with the server's own settings of the study (server.json)
            extras["racing"] = body.racing.model_dump()
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

    @app.get("/studies/{name}", dependencies=auth, responses=_errors(404, 422))
    def get_status(name: Name) -> dict[str, Any]:
        return study(name).status()

    @app.post("/studies/{name}/ask", dependencies=auth, responses=_errors(404, 422))
    async def ask(name: Name, body: AskIn) -> AskOut:
        """Up to ``n`` candidates; fewer when a generational strategy's generation is all handed out.

        With ``wait_s``, an ask that got none waits (holding no thread) until a tell or an expired lease may free
        some, or ``wait_s`` has passed.
        """
        s = await run_in_threadpool(study, name)  # may open the study from disk
        deadline = time.monotonic() + body.wait_s
        while True:
            told = signal.event(name)
            got = await run_in_threadpool(s.ask, body.n)
            left = deadline - time.monotonic()
            if got or left <= 0 or not s.may_free:
                break
            lease = s.next_lease_expiry_s()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(told.wait(), left if lease is None else min(left, lease))
        reason = await run_in_threadpool(s.shortfall) if len(got) < body.n else None
        return AskOut(candidates=[Candidate(**a.__dict__) for a in got], complete=s.complete,
                      retry_after_s=None if len(got) == body.n or s.complete else 1.0, reason=reason)

    @app.post("/studies/{name}/trials/{number}/tell", dependencies=auth, responses=_errors(403, 404, 409, 422))
    def tell(name: Name, number: Number, body: TellIn) -> TrialOut:
        """Record the client's scores (or ``error``) for a trial it was handed, with that trial's ticket."""
        record = study(name).tell(number, body.ticket, body.objectives, error=body.error, per_example=body.per_example,
                                  worker=body.worker, seconds=body.seconds)
        return _trial_out(record)

    @app.get("/studies/{name}/racing", dependencies=auth, responses=_errors(404, 422))
    def racing(name: Name) -> dict[str, Any]:
        """A raced study's example order per objective and the cumulative counts each stage reaches."""
        s = study(name)
        if s.racing is None:
            raise NotFoundError(f"study '{name}' was created without racing")
        return s.racing.layout()

    @app.post("/studies/{name}/trials/{number}/stage", dependencies=auth, responses=_errors(403, 404, 409, 422))
    def stage(name: Name, number: Number, body: StageIn) -> StageOut:
        """Report one stage's scores of a raced trial; ``stop: true`` means it was recorded pruned: stop scoring it."""
        return StageOut(**study(name).stage(number, body.ticket, body.stage, body.per_example))

    @app.get("/studies/{name}/trials/{number}", dependencies=auth, responses=_errors(404, 422))
    def get_trial(name: Name, number: Number) -> TrialOut:
        return _trial_out(study(name).trial(number))

    @app.get("/studies/{name}/front", dependencies=auth, responses=_errors(404, 422))
    def front(name: Name) -> dict[str, Any]:
        return study(name).front()

    @app.get("/studies/{name}/trials/{number}/recipe", dependencies=auth, responses=_errors(404, 422))
    def recipe(name: Name, number: Number) -> dict[str, Any]:
        r = study(name).trial(number)
        if r.recipe is None:
            raise NotFoundError(f"trial {number} has no recipe (a box space scores genomes directly)")
        return r.recipe

    @app.get("/studies/{name}/trials/{number}/mergekit", dependencies=auth, responses=_errors(404, 422))
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
