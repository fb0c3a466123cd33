"""open_database(settings): an engine and sessions at the current schema, or a clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.errors import InfraError, SpecError
from kiln.redact import redact
from kiln.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def open_database(settings: Settings, pool: int | None = None) -> tuple[Any, sessionmaker[Session]]:
    """Connect; the embedded SQLite database migrates itself, any other must be at head.
    `pool`: connections to keep open (a server's threads), for databases that pool them.

    Raises InfraError (exit 4 in the CLI) when the database is unreachable or behind.
    """
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from db.migrate import current_revision, head_revision, upgrade_to_head
    from db.session import make_engine, make_sessionmaker

    url = settings.db_url
    sized = {"pool_size": pool, "max_overflow": pool} if pool and "sqlite" not in url else {}
    try:
        engine = make_engine(url, **sized)
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise SpecError(f"KILN_DATABASE_URL {redact(url)} is not usable: {redact(str(e))}") from e
    try:
        current = current_revision(engine)
    except OperationalError as e:
        engine.dispose()
        raise InfraError(f"database {redact(url)} unreachable: {e.orig}") from e
    if current != head_revision():
        if engine.dialect.name != "sqlite":
            engine.dispose()
            raise InfraError(
                f"database {redact(url)} is at schema {current or 'none'}, not"
                f" {head_revision()}; run `jobs db upgrade`"
            )
        upgrade_to_head(url)  # the embedded single-user database migrates itself
    return engine, make_sessionmaker(engine)
