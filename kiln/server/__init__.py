"""The HTTP API (`jobs server`): Kiln's one door for a team, with per-user tokens.

create_app(settings) builds the ASGI app (FastAPI); uvicorn serves it.
"""

from __future__ import annotations

from kiln.server.app import create_app

__all__ = ["create_app"]
