"""The gate: every request but the public ones shows a valid token before its body is read.

A pure ASGI middleware (outermost): it reads the `Authorization` header, verifies the token
(db.tokens, in a thread), and answers 401 at once, without reading a byte of the body, when it
is missing, wrong or revoked. A verified caller's Identity goes in the request's state (the
routes' `Caller` takes it from there), with the body cap that applies to them: their token's
own, else KILN_USER_MAX_UPLOAD_MB for `read` and `submit` users; an admin's is the server's.

The dashboard's browsers send no header: a request without `Authorization` may show its token
in the `kiln_token` cookie (HttpOnly, SameSite=Strict; set by POST /login, kiln.server.web).
A cookie-borne request with an unsafe method must also send header `X-CSRF-Token` equal to the
`kiln_csrf` cookie (double submit), except the dashboard's own form routes (`/ui/...`), which
check the form's `csrf` field against that cookie themselves. A page (`/`, `/ui/...`) asked for
without a valid token is sent to /login instead of answered 401.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import quote

from anyio import to_thread
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kiln.server.problems import Refused, problem

if TYPE_CHECKING:
    from kiln.server.state import ServerState

PUBLIC = frozenset({"/health", "/ready", "/openapi.json", "/login", "/logout"})
PUBLIC_PREFIXES = ("/static/",)
TOKEN_COOKIE, CSRF_COOKIE, CSRF_HEADER = "kiln_token", "kiln_csrf", b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_page(path: str) -> bool:
    """The dashboard's HTML: the jobs page at / and everything under /ui/."""
    return path == "/" or path.startswith("/ui/")


def csrf_matches(cookie: str | None, given: str | None) -> bool:
    """Whether the CSRF value sent (a header or a form field) is the `kiln_csrf` cookie's."""
    if not cookie or not given:
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), given.encode("utf-8"))


class Gate:
    """Verifies the caller before the app (and its body reading) runs; see the module."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        state: ServerState = scope["app"].state.kiln
        headers = dict(scope["headers"])
        header = headers.get(b"authorization", b"").decode("latin-1")
        cookies = {} if header else cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
        by_cookie = not header and bool(cookies.get(TOKEN_COOKIE))
        if by_cookie:
            header = f"Bearer {cookies[TOKEN_COOKIE]}"
        from kiln.server.auth import verify

        try:
            if not header and is_page(path):
                raise Refused(401, "no token")
            identity = await to_thread.run_sync(verify, state, header)
        except Refused as e:
            if is_page(path) and not headers.get(b"authorization"):
                await _to_login(scope, receive, send)
            else:
                await problem(e.status, str(e), error="NotAllowed")(scope, receive, send)
            return
        unsafe = scope["method"] not in SAFE_METHODS
        if by_cookie and unsafe and not is_page(path):
            sent = headers.get(CSRF_HEADER, b"").decode("latin-1")
            if not csrf_matches(cookies.get(CSRF_COOKIE), sent):
                detail = ("a request signed in by cookie must send header X-CSRF-Token equal to"
                          " the kiln_csrf cookie")  # fmt: skip
                await problem(403, detail, error="NotAllowed")(scope, receive, send)
                return
        scope.setdefault("state", {})["identity"] = identity
        if identity.max_upload_bytes is not None:
            scope["state"]["body_limit"] = identity.max_upload_bytes
        await self.app(scope, receive, send)


async def _to_login(scope: Scope, receive: Receive, send: Send) -> None:
    """A page asked for without a valid token: to the login page, which comes back here."""
    back = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}"
                            if scope.get("query_string") else "")  # fmt: skip
    target = "/login" if back == "/" else f"/login?next={quote(back, safe='')}"
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")  # a stale or revoked one
    await response(scope, receive, send)
