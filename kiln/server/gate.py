"""The gate: every request but the public ones shows a valid token before its body is read.

A pure ASGI middleware (outermost): it reads the `Authorization` header, verifies the token
(db.tokens, in a thread), and answers 401 at once, without reading a byte of the body, when it
is missing, wrong or revoked. A verified caller's Identity goes in the request's state (the
routes' `Caller` takes it from there), with the body cap that applies to them: their token's
own, else KILN_USER_MAX_UPLOAD_MB for `read` and `submit` users; an admin's is the server's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from kiln.server.problems import Refused, problem

if TYPE_CHECKING:
    from kiln.server.state import ServerState

PUBLIC = frozenset({"/health", "/ready", "/openapi.json"})


class Gate:
    """Verifies the caller before the app (and its body reading) runs; see the module."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC:
            await self.app(scope, receive, send)
            return
        state: ServerState = scope["app"].state.kiln
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        from kiln.server.auth import verify

        try:
            identity = await to_thread.run_sync(verify, state, header)
        except Refused as e:
            await problem(e.status, str(e), error="NotAllowed")(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        if identity.max_upload_bytes is not None:
            scope["state"]["body_limit"] = identity.max_upload_bytes
        await self.app(scope, receive, send)
