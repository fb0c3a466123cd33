"""create_app(settings): the FastAPI app, its body cap, error handlers, health and readiness."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.server.gate import Gate
from kiln.server.problems import KilnJSON, add_handlers, problem
from kiln.server.state import ServerState, Verified, state_of
from kiln.settings import Settings

if TYPE_CHECKING:
    from kiln.client import Client

log = logging.getLogger(__name__)
FIELDS_BYTES = 1024 * 1024  # room for the form fields and multipart framing beside the files
THREADS = 40  # anyio's default thread limit, which runs the sync routes and token checks
USER_CAP = "your cap: KILN_USER_MAX_UPLOAD_MB, or your token's own"


def body_limit(settings: Settings) -> int:
    """The largest request body: a data set, a model file and the fields."""
    return settings.max_dataset_bytes + settings.max_source_bytes + FIELDS_BYTES


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413: at once by its Content-Length, or
    as soon as a streamed (chunked) body passes it. Nothing past the limit is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, why = self.limit, self.why
        own = scope.get("state", {}).get("body_limit")  # the caller's cap (kiln.server.gate)
        if own is not None and own < limit:
            limit, why = own, USER_CAP
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(scope, send, length.decode("latin-1"), limit, why)
            return
        received, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's own answer to a cut body: ours goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, send, f"more than {limit}", limit, why)

    @property
    def why(self) -> str:
        return f"KILN_MAX_DATASET_BYTES + KILN_MAX_SOURCE_BYTES + {FIELDS_BYTES} for the fields"

    async def _refuse(self, scope: Scope, send: Send, size: str, limit: int, why: str) -> None:
        what = f"{size} bytes" if size.isdigit() or size.startswith("more") else repr(size)
        response = problem(
            413 if size.isdigit() or size.startswith("more") else 400,
            f"request body is {what}; the limit is {limit} ({why})",
        )
        await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The HTTP API over the database and broker in `settings`.

    `client`: the Client that checks, stores and sends submissions (default: one over the
    settings' database and broker; tests pass one whose messages go nowhere).
    """
    from kiln.server import charts, fleet, jobs, results, submit, web

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state: ServerState = app.state.kiln
        if state.engine is not None:
            state.engine.dispose()

    app = FastAPI(
        title="Kiln", version=_version(), lifespan=lifespan, default_response_class=KilnJSON,
        dependencies=[Depends(known_query)],
        summary="Batch inference for Pyro models: submit fits and predictions, read results.",
        docs_url=None, redoc_url=None,  # no third-party scripts; /openapi.json is the document
    )  # fmt: skip
    app.state.kiln = _state(settings, client)
    app.add_middleware(BodyLimit, limit=body_limit(settings))
    app.add_middleware(Gate)  # added last: runs first, before any body is read
    add_handlers(app)
    app.include_router(jobs.router)
    app.include_router(submit.router)
    app.include_router(fleet.router)
    app.include_router(results.router)
    app.include_router(charts.router)
    web.install(app)  # the dashboard: /, /ui/..., /login, /logout, /static

    @app.get("/health", tags=["service"], summary="The server process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="The database answers")
    def ready(request: Request) -> Any:
        from sqlalchemy import text

        try:
            with state_of(request).sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as e:
            log.warning("server: not ready: %s", e)
            return problem(503, f"database unreachable: {type(e).__name__}")
        return {"status": "ready"}

    return app


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (a misspelt `?limt=5` is not ignored)."""
    from fastapi.routing import APIRoute

    from kiln.errors import SpecError

    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    allowed: set[str] = set()
    pending = [route.dependant]
    while pending:  # the route's own parameters and its dependencies'
        dependant = pending.pop()
        allowed.update(p.alias for p in dependant.query_params)
        pending.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        takes = ", ".join(sorted(allowed)) or "none"
        raise SpecError(f"unknown query parameter {shown}; {route.path} takes: {takes}",
                        field="query")  # fmt: skip


def _state(settings: Settings, client: Client | None) -> ServerState:
    from kiln.client import Client

    if client is not None:
        return ServerState(settings, client._sessionmaker(), client, Verified())
    from kiln.connect import open_database

    # As many pooled connections as the threads that run routes and the gate's token checks
    # hold at once: a smaller pool closes and reopens connections under load (bench_server).
    engine, sessions = open_database(settings, pool=THREADS)

    def celery() -> Any:  # the Client makes it on the first submission and keeps it
        from worker.app import make_app

        return make_app(settings)

    return ServerState(settings, sessions, Client.over(settings, sessions, celery), Verified(),
                       engine=engine)  # fmt: skip


def _version() -> str:
    from kiln import __version__

    return __version__
