"""Run Alembic migrations programmatically (upgrade_to_head), and tell whether a database is
at the head revision without importing Alembic (head_revision, current_revision): every `jobs`
command checks that, and Alembic's import alone took a third of a second."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
VERSIONS = MIGRATIONS / "versions"
REVISION = re.compile(r"""^revision\s*=\s*["']([^"']+)["']""", re.M)
DOWN_REVISION = re.compile(r"""^down_revision\s*=\s*(?:["']([^"']+)["']|None)""", re.M)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' is Alembic's interpolation character; URLs may hold %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every migration not yet applied to the database at `url`."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


@cache
def head_revision() -> str | None:
    """The newest revision: the one no other revision names as its down_revision, read from
    the migration files' text (tests check it against Alembic's own answer)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text()
        revision, down = REVISION.search(source), DOWN_REVISION.search(source)
        if revision is None or down is None:
            raise RuntimeError(f"{path.name}: no revision/down_revision line")
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {sorted(heads)}")
    return next(iter(heads), None)


def current_revision(engine: Engine) -> str | None:
    """The database's revision (alembic_version), or None for a database without one."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    if len(rows) > 1:
        raise RuntimeError(f"alembic_version holds {len(rows)} rows; one was expected")
    return str(rows[0][0]) if rows else None
