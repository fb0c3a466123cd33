"""`jobs server` (the HTTP API) and `jobs token create/list/revoke` (who may use it)."""

from __future__ import annotations

from datetime import datetime

import click

from kiln.cli.app import App, jobs
from kiln.render import JSON, emit_rows

ROLES = ["read", "submit", "admin"]


@jobs.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; put TLS (a reverse proxy) in front of anything else.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8321, show_default=True)
@click.pass_obj
def server(app: App, host: str, port: int) -> None:
    """Serve the HTTP API: users submit and read jobs with a token, holding no database or
    broker credentials [env: KILN_DATABASE_URL, KILN_BROKER_URL]."""
    import uvicorn

    from kiln.server import create_app

    api = create_app(app.settings)  # connects now: a database that is down fails here (exit 4)
    app.say(f"kiln server: http://{host}:{port} (OpenAPI at /openapi.json)")
    uvicorn.run(api, host=host, port=port, log_level="info", server_header=False)


@jobs.group()
def token() -> None:
    """API tokens for `jobs server` [env: KILN_DATABASE_URL]."""


@token.command()
@click.option("--user", required=True, help="Who the token is for (the owner of their jobs).")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="submit",
    show_default=True,
    help="read: see every job; submit: submit, see and cancel own jobs; admin: all.",
)
@click.option("--max-unfinished", type=click.IntRange(1, 2**40), default=None,
              help="Cap on the user's jobs not yet ended, with this token [default: the"
              " server's KILN_USER_MAX_UNFINISHED].")  # fmt: skip
@click.option("--max-upload-mb", type=click.IntRange(1, 2**20), default=None,
              help="Cap on one request's uploads, with this token [default: the server's"
              " KILN_USER_MAX_UPLOAD_MB].")  # fmt: skip
@JSON
@click.pass_obj
def create(app: App, user: str, role: str, max_unfinished: int | None,
           max_upload_mb: int | None, as_json: bool) -> None:  # fmt: skip
    """Create a token and print it, once: only its hash is stored."""
    from db.tokens import create_token

    upload = max_upload_mb * 2**20 if max_upload_mb is not None else None
    with app.sessions() as session:
        view, secret = create_token(session, user, role, max_unfinished=max_unfinished,
                                    max_upload_bytes=upload)  # fmt: skip
    if as_json:
        app.emit({"id": view.id, "user": view.user, "role": view.role, "token": secret},
                 as_json=True)  # fmt: skip
        return
    app.emit(secret)
    app.say(
        f"token {view.id} for {view.user} (role {view.role}); it is shown only now."
        f" Use it as KILN_TOKEN with KILN_API_URL; `jobs token revoke {view.id}` ends it."
    )


@token.command("list")
@JSON
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """Every token (never the token itself): id, user, role, created, last used, revoked."""
    from db.tokens import list_tokens

    with app.sessions() as session:
        views = list_tokens(session)

    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat(timespec="seconds") if moment is not None else None

    def mb(size: int | None) -> int | None:
        return size // 2**20 if size is not None else None

    rows = [[v.id, v.user, v.role, iso(v.created_at), iso(v.last_used_at), iso(v.revoked_at),
             v.max_unfinished, mb(v.max_upload_bytes)] for v in views]  # fmt: skip
    columns = ["id", "user", "role", "created_at", "last_used_at", "revoked_at",
               "max_unfinished", "max_upload_mb"]  # fmt: skip
    if as_json:
        app.emit([dict(zip(columns, r, strict=True)) for r in rows], as_json=True)
    else:
        emit_rows(columns, rows, "table")


@token.command()
@click.argument("token_id")
@click.pass_obj
def revoke(app: App, token_id: str) -> None:
    """Revoke a token: the next request with it is refused (401)."""
    from db.tokens import revoke_token

    with app.sessions() as session:
        view = revoke_token(session, token_id)
    app.emit(f"token {view.id} ({view.user}, {view.role}) revoked")
