"""Signing in to the dashboard with a token, and out.

GET /login gives the form (and a `kiln_csrf` cookie, random, readable by the page's scripts,
SameSite=Strict). POST /login checks the form's `csrf` field against that cookie, verifies the
token as the gate does (kiln.server.auth.verify), and keeps it in the `kiln_token` cookie:
HttpOnly, SameSite=Strict, Path=/, Secure when the request came over https, for 12 hours. The
CSRF value is renewed at each sign-in. POST /logout clears both.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.server.gate import CSRF_COOKIE, TOKEN_COOKIE, csrf_matches
from kiln.server.problems import Refused
from kiln.server.state import state_of
from kiln.server.web.render import PAGE_HEADERS, page

router = APIRouter(include_in_schema=False)
SESSION_S = 12 * 3600
MAX_TOKEN = 256


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never `//host` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(c.isspace() or not c.isprintable() for c in target):  # "/\t/host" is "//host"
        return "/"
    return target[:2000]


def _set(response: Response, request: Request, name: str, value: str, http_only: bool) -> None:
    response.set_cookie(name, value, max_age=SESSION_S, path="/", httponly=http_only,
                        samesite="strict", secure=request.url.scheme == "https")  # fmt: skip


def _login_form(request: Request, next_path: str, error: str | None,
                status: int = 200) -> HTMLResponse:  # fmt: skip
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = page(request, "login.html", status, title="Sign in", csrf=csrf,
                    next_path=next_path, error=error, identity=None)  # fmt: skip
    if request.cookies.get(CSRF_COOKIE) != csrf:
        _set(response, request, CSRF_COOKIE, csrf, http_only=False)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> HTMLResponse:
    return _login_form(request, safe_next(next), None)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=MAX_TOKEN)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    from kiln.server.auth import verify

    target = safe_next(next)
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        return _login_form(request, target, "The form expired; please sign in again.", 400)
    try:
        await run_in_threadpool(verify, state_of(request), f"Bearer {token.strip()}")
    except Refused as e:
        return _login_form(request, target, f"Not signed in: {e}.", 401)
    response = RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    _set(response, request, TOKEN_COOKIE, token.strip(), http_only=True)
    _set(response, request, CSRF_COOKIE, secrets.token_urlsafe(24), http_only=False)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Forget the token (a form with the CSRF value: no other site can sign you out)."""
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        return _login_form(request, "/", "That sign-out form expired; sign in or out again.", 400)
    response = RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    for name in (TOKEN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")
    return response
