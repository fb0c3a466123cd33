"""The web dashboard that `jobs server` serves at /: server-rendered pages (Jinja) over the same
db reads as the API, a little plain JavaScript that calls the JSON API with the page's cookie,
and the vendored uPlot for charts. Nothing is fetched from another origin at run time.

install(app) adds the login routes, the pages and /static to the app.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Mount /static (public) and include the login and page routers."""
    from starlette.staticfiles import StaticFiles

    from kiln.server.web import login, pages
    from kiln.server.web.render import STATIC

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(login.router)
    app.include_router(pages.router)
