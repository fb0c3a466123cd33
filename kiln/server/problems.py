"""Errors as application/problem+json (RFC 9457), carrying Kiln's own messages."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kiln.errors import DataError, InfraError, KilnError, NotAllowed, NotFound, SpecError, UserError
from kiln.redact import redact

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 413: "Content too large", 422: "Bad input",
          500: "Internal error", 503: "Unavailable"}  # fmt: skip


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string", "description": "Kiln's message, as `jobs` prints it"},
        "error": {"type": "string", "description": "Kiln's error class: SpecError, DataError..."},
        "field": {"type": "string"}, "column": {"type": "string"},
    },
}  # fmt: skip
# The problems every route may answer with, declared in the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": TITLES[code], "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}
    for code in (400, 401, 403, 404, 413, 422, 500, 503)
}


class Refused(Exception):
    """401 (no, a bad or a revoked token) or 403 (the role may not): raised by kiln.server.auth."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def finite(value: Any) -> Any:
    """The value with every NaN or infinity replaced by None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class KilnJSON(JSONResponse):
    """JSON without NaN or Infinity (which json.dumps would write, and no parser must read)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(finite(content), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")  # fmt: skip


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    """A problem document: type, title, status, detail (Kiln's message) and extensions."""
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
            "detail": redact(detail)}  # fmt: skip
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return KilnJSON(body, status_code=status, media_type=PROBLEM, headers=headers)


def status_of(error: KilnError) -> int:
    """The HTTP status of one of Kiln's errors."""
    if isinstance(error, UserError):
        return 422
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InfraError):
        return 503
    if isinstance(error, NotAllowed):
        return 403
    return 500


def add_handlers(app: FastAPI) -> None:
    """Every error the app raises becomes a problem document."""

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, e: KilnError) -> JSONResponse:
        field = e.field if isinstance(e, SpecError) else None
        column = e.column if isinstance(e, DataError) else None
        return problem(status_of(e), str(e), error=type(e).__name__, field=field, column=column)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return problem(e.status, str(e), error="NotAllowed")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return problem(422, "; ".join(_describe(err) for err in e.errors()), error="SpecError")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return problem(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("server: %s %s failed", request.method, request.url.path)
        return problem(500, f"internal error ({type(e).__name__}); the server's log has more")

    # The database unreachable mid-request: SQLAlchemy's OperationalError, not a bug.
    from sqlalchemy.exc import OperationalError

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, e: OperationalError) -> JSONResponse:
        return problem(503, f"unavailable: database: {e.orig}", error="InfraError")


def _describe(error: Any) -> str:
    """`steps: Input should be a valid integer (got 'many')` from a FastAPI validation error."""
    where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
    got = error.get("input")
    shown = f" (got {str(got)[:80]!r})" if isinstance(got, str | int | float) else ""
    return f"{where or 'request'}: {error.get('msg', 'invalid')}{shown}"
