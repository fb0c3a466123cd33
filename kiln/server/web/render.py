"""The dashboard's HTML: its Jinja templates, the headers every page carries, and the filters
that show numbers, times and job facts the same way on every page."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from kiln.server.gate import CSRF_COOKIE

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
# No inline script or style, nothing from another origin, never in a frame.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
ENDED = ("succeeded", "failed", "cancelled")


@cache
def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined,
    )  # fmt: skip
    env.filters.update(num=num, when=when, duration=duration, method=method_of, pretty=pretty)
    env.globals.update(ENDED=ENDED, version=_version())
    return env


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered template with the page headers; `identity` and `csrf` are always there."""
    from kiln.server.auth import Identity

    identity = getattr(request.state, "identity", None)
    context.setdefault("identity", identity if isinstance(identity, Identity) else None)
    context.setdefault("csrf", request.cookies.get(CSRF_COOKIE, ""))
    context.setdefault("path", request.url.path)
    body = environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def num(value: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits; an empty string for None, `NaN` as such."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.{digits}g}"


def when(moment: datetime | str | None) -> str:
    """A moment in UTC to the second: `2026-01-31 14:05:09`."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """`850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def job_duration(job: Any) -> float | None:
    """Seconds from start to end (or to now, while it runs)."""
    if job.started_at is None:
        return None
    from db.models import as_utc

    start: datetime = as_utc(job.started_at)
    end: datetime = as_utc(job.finished_at) if job.finished_at else datetime.now(UTC)
    return max(0.0, (end - start).total_seconds())


def method_of(spec: dict[str, Any]) -> str:
    """How a job infers, from its spec: `SVI, AutoNormal`, `NUTS, 4 chains`, `predict`..."""
    kind = str(spec.get("kind", ""))
    if kind == "user_mcmc_fit":
        chains = spec.get("chains")
        return f"{str(spec.get('method', 'nuts')).upper()}" + (f", {chains} chains"
                                                              if chains else "")  # fmt: skip
    if kind in ("linreg_fit", "user_svi_fit"):
        return f"SVI, {spec.get('guide_function') or spec.get('guide') or 'AutoNormal'}"
    if kind == "library_fit":
        return "SVI"
    if kind == "batch":
        return "SVI, vectorised batch"
    if kind.endswith("predict"):
        return "posterior predictive"
    return kind


def pretty(value: Any) -> str:
    """JSON for people: indented, keys in their order."""
    return json.dumps(value, indent=2, default=str)


def final_loss(job: Any) -> float | None:
    """The fit's final loss (jobs.info), else its latest one."""
    info = job.info or {}
    value = info.get("final_loss")
    if value is None:
        value = job.last_loss
    return float(value) if isinstance(value, int | float) else None


def _version() -> str:
    from kiln import __version__

    return __version__
