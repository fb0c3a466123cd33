"""Shell completion of job and sweep ids (click's `shell_complete`), from the Client.

`eval "$(_KILN_COMPLETE=bash_source kiln)"` (README.md) turns it on; then `kiln show <TAB>`
offers the newest job ids (and names) that start with what is typed, with the job's model and
status as help. Completion runs on every TAB, so it is bounded (the newest SCANNED jobs are
read, at most SHOWN offered), quick to give up (TIMEOUT_S over the HTTP API) and silent: with
the database or API unreachable it offers nothing rather than print an error into the shell.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from kiln.client import Client

SHOWN = 50  # offered at most: a shell lists more as a wall nobody reads
SCANNED = 200  # newest jobs (or sweeps) read per TAB; a prefix beyond them is typed in full
TIMEOUT_S = 3.0  # over the HTTP API: a TAB that hangs is worse than one that offers nothing
MAX_TYPED = 64  # longer than any id or name: nothing to offer


@contextlib.contextmanager
def _client() -> Iterator[Client]:
    """A Client from the KILN_* settings (the RemoteClient with KILN_API_URL set), or
    LookupError when there is nothing to read: the embedded database does not exist yet
    (opening it would create and migrate it on a TAB)."""
    from kiln.client import Client
    from kiln.settings import Settings

    settings = Settings()
    if not settings.api_url and settings.db_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(settings.db_url).database
        if not database or not Path(database).exists():
            raise LookupError("no embedded database yet")
    client = Client()
    http = getattr(client, "_http", None)
    if http is not None:  # the RemoteClient: its own timeout is for real requests
        import httpx

        http.timeout = httpx.Timeout(TIMEOUT_S)
    try:
        yield client
    finally:
        client.close()


def _offer(read: Callable[[Client], list[CompletionItem]]) -> list[CompletionItem]:
    """What `read` offers, or nothing on any failure (unreachable, refused, not set up):
    completion must never print into the user's shell or fail their TAB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _client() as client:
                return read(client)[:SHOWN]
    except Exception:  # noqa: BLE001  (any failure: offer nothing, silently)
        return []


def job_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The newest job ids and names that start with `incomplete`, newest first; help: the
    job's name (or model), kind and status."""
    if len(incomplete) > MAX_TYPED:
        return []

    def read(client: Client) -> list[CompletionItem]:
        items = []
        for job in client.job_records(limit=SCANNED):
            name = getattr(job, "name", None)
            about = f"{name or job.model} ({job.kind}, {job.status})"
            if job.id.startswith(incomplete):
                items.append(CompletionItem(job.id, help=about))
            if name and name.startswith(incomplete):
                items.append(CompletionItem(name, help=f"{job.id} ({job.kind}, {job.status})"))
        return items

    return _offer(read)


def sweep_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The newest sweep ids that start with `incomplete`; help: model, members, status."""
    if len(incomplete) > MAX_TYPED:
        return []

    def read(client: Client) -> list[CompletionItem]:
        return [
            CompletionItem(s.id, help=f"{s.model}, {s.members} members ({s.status})")
            for s in client.sweeps(SCANNED) if s.id.startswith(incomplete)
        ]  # fmt: skip

    return _offer(read)
