"""The `jobs` group, App (settings, sessions, output) and the named exit codes.

Each command module registers its commands on `jobs` from here; kiln.cli.get_cli() imports
those modules only when the group is built (so `jobs --help` stays fast).
"""

from __future__ import annotations

import json
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

import click

from kiln.cli.lazy import LazyGroup
from kiln.errors import InfraError, KilnError, NotAllowed, NotFound, UserError
from kiln.logs import configure_logging
from kiln.redact import redact

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from kiln.client import Client
    from kiln.settings import Settings

OK = 0
JOB_FAILED = 1
BAD_INPUT = 2
NOT_FOUND = 3
UNAVAILABLE = 4
NOT_ALLOWED = 5  # the HTTP API refused: no, a bad or revoked token (401), or the role (403)
INTERRUPTED = 130

# With KILN_API_URL set, these commands go through the HTTP API (kiln.remote)...
OVER_API = frozenset({"submit fit", "submit predict", "submit sweep", "list", "show", "logs",
                      "cancel", "watch", "losses", "params", "metrics", "diagnostics", "samples",
                      "export", "plot", "sweep show", "sweep list", "sweep cancel", "workers",
                      "stats", "tag", "compare"})  # fmt: skip
# ...these are the fleet's own and always use the database and broker (they need them)...
FLEET_SIDE = frozenset({"server", "token create", "token list", "token revoke", "worker",
                        "scheduler", "db upgrade", "demo", "broker status",
                        "broker stop"})  # fmt: skip
# ...and any other refuses (exit 2) rather than open the database behind the API's back.


class App:
    """What every command needs: settings, database sessions, the broker, and output."""

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is not None:
            self.__dict__["settings"] = settings
        self.engine: Any = None

    @cached_property
    def settings(self) -> Settings:
        """Read on first use (a bad one is a UserError, exit 2), so `jobs CMD --help` never
        imports pydantic-settings (a fifth of a second)."""
        from kiln.settings import get_settings

        return get_settings()

    def close(self) -> None:
        """Release database connections, or the API's (called when the command ends)."""
        if self.engine is not None:
            self.engine.dispose()
        client = self.__dict__.get("client")  # made only if the command used it
        if client is not None:
            client.close()

    @property
    def remote(self) -> bool:
        """Whether this command goes through the HTTP API (KILN_API_URL is set)."""
        return bool(self.settings.api_url) and command_path() not in FLEET_SIDE

    def _direct_only(self) -> None:
        if self.remote:
            self.abort(
                f"`jobs {command_path()}` does not work over the HTTP API yet (KILN_API_URL is"
                f" set); over it: {', '.join(f'`jobs {c}`' for c in sorted(OVER_API))}. Unset"
                " KILN_API_URL to use the database directly",
                BAD_INPUT,
            )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from kiln.connect import open_database

        self._direct_only()
        self.engine, sessions = open_database(self.settings)
        return sessions

    @cached_property
    def client(self) -> Client:
        """The Client over this command's database and broker: every flow goes through it."""
        from kiln.client import Client

        if self.remote and command_path() in OVER_API:
            from kiln.remote import RemoteClient

            return RemoteClient.from_settings(self.settings)
        return Client.over(self.settings, self.sessions, lambda: self.celery)

    @cached_property
    def celery(self) -> Any:
        from worker.app import make_app

        self._direct_only()
        return make_app(self.settings)

    def emit(self, data: Any, as_json: bool = False) -> None:
        """Data to stdout: one JSON document, or text as it is."""
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            click.echo(data)

    def say(self, message: str) -> None:
        """A message for people, on stderr."""
        click.echo(message, err=True)

    def abort(self, message: str, code: int) -> NoReturn:
        _fail(message, code)


class JobsGroup(LazyGroup):
    """Turns Kiln's errors into a message on stderr and a named exit code; imports each
    command's module on first use (kiln.cli.lazy)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(str(e), BAD_INPUT)
        except NotFound as e:
            _fail(str(e), NOT_FOUND)
        except NotAllowed as e:
            _fail(f"not allowed: {e}", NOT_ALLOWED)
        except InfraError as e:
            _fail(f"unavailable: {e}", UNAVAILABLE)
        except KilnError as e:
            _fail(str(e), JOB_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted", INTERRUPTED)
        except Exception as e:
            if _is_database_down(e):
                _fail(f"unavailable: {e}", UNAVAILABLE)
            raise


def _is_database_down(error: Exception) -> bool:
    """An SQLAlchemy OperationalError, without importing SQLAlchemy for commands that never
    did (`jobs --help`): such an error can only come from a command that imported it."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.OperationalError)


def command_path() -> str:
    """The running command without the program name: `submit fit`, `list`, `token create`."""
    names = []
    ctx: click.Context | None = click.get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {redact(message)}", err=True)  # errors may quote a URL
    sys.exit(code)


@click.group(cls=JobsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v, -vv).")
@click.option("--log-json", is_flag=True, help="Log lines as JSON.")
@click.pass_context
def jobs(ctx: click.Context, verbose: int, log_json: bool) -> None:
    """Kiln: submit Pyro fits to a fleet of workers and read their results.

    Settings come from KILN_* environment variables: KILN_HOME (default ~/.kiln),
    KILN_DATABASE_URL (default SQLite in KILN_HOME) and KILN_BROKER_URL (default: an
    embedded redis-server in KILN_HOME), then $KILN_HOME/kiln.toml, or the file that
    KILN_CONFIG names (never a kiln.toml in the working directory).
    """
    configure_logging(verbose, log_json)
    ctx.obj = App()  # settings are read when a command first needs them
    ctx.call_on_close(ctx.obj.close)
