"""Hostile job and sweep ids: matched literally (`%` and `_` are not LIKE wildcards, quotes are
not SQL), never a path or a command. Every lookup says not found (exit 3), or refuses the id
(exit 2); nothing is cancelled, created or queued, on SQLite + the embedded broker and on
PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from db.jobs import get_job
from kiln.cli import BAD_INPUT, NOT_FOUND
from kiln.errors import NotFound
from tests.conftest import RUGGED, RUGGED_FORMULA, offline_client
from tests.security.conftest import Target


@pytest.fixture(scope="module")
def seeded(target: Target) -> Iterator[tuple[Target, str, str]]:
    """A queued fit and a queued sweep to aim at: (target, fit id, sweep id)."""
    kiln = offline_client(target.stack)
    fit = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=5, seed=1)
    sweep = kiln.submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01, 0.02]}, steps=5)
    target.settle()
    yield target, fit, sweep.sweep_id


# (id, the id; {FIT} is the fit's first three characters, {M} the marker's path)
IDS = [
    ("percent-wildcards", "%%%%"),
    ("underscore-wildcards", "____"),
    ("prefix-then-percent", "{FIT}%"),
    ("prefix-then-underscore", "{FIT}_"),
    ("percent-then-prefix", "%{FIT}"),
    ("escaped-percent", "{FIT}\\%"),
    ("sql-or-true", "' OR '1'='1"),
    ("sql-drop-table", "x'); DROP TABLE jobs; --"),
    ("sql-union", "' UNION SELECT id FROM jobs --"),
    ("path-traversal", "../../../../etc/passwd"),
    ("glob", "****"),
    ("regex", ".*.*"),
    ("shell-command", "$(touch {M})"),
    ("fullwidth-digits", "\uff10\uff11\uff12\uff13"),
    ("100k-characters", "a" * 100_000),
    ("nul-byte", "\x00{FIT}"),
]
# A lookup by id: each must say not found, and must not touch the job it could have matched.
LOOKUPS = {
    "show": ("show", "ID"),
    "cancel": ("cancel", "ID"),
    "sweep-show": ("sweep", "show", "ID"),
    "sweep-cancel": ("sweep", "cancel", "ID"),
}


def _id(template: str, fit: str) -> str:
    return template.replace("{FIT}", fit[:3])


@pytest.mark.parametrize("command", LOOKUPS, ids=list(LOOKUPS))
@pytest.mark.parametrize("case", IDS, ids=[i[0] for i in IDS])
def test_a_hostile_id_is_not_found_and_touches_nothing(
    seeded: tuple[Target, str, str], request: pytest.FixtureRequest, case: tuple[str, str],
    command: str,
) -> None:  # fmt: skip
    target, fit, _ = seeded
    job_id = _id(case[1], fit)
    args = [job_id if a == "ID" else a for a in LOOKUPS[command]]
    what = "sweep" if command.startswith("sweep") else "job"
    target.refuse(args, f"error: {what} ", NOT_FOUND)


@pytest.mark.parametrize("case", IDS, ids=[i[0] for i in IDS])
def test_a_predict_from_a_hostile_id_creates_nothing(
    seeded: tuple[Target, str, str], case: tuple[str, str]
) -> None:
    target, fit, _ = seeded
    job_id = _id(case[1], fit).replace("{M}", str(target.marker))
    printable = "\x00" not in job_id
    if len(job_id) > 32 or not printable:  # refused as a spec before any lookup
        named = "String should have at most 32" if printable else "holds no control characters"
        target.refuse(("submit", "predict", "--from", job_id), named, BAD_INPUT)
    else:
        target.refuse(("submit", "predict", "--from", job_id), "not found", NOT_FOUND)


def test_wildcards_in_an_id_prefix_match_nothing(seeded: tuple[Target, str, str]) -> None:
    target, fit, _ = seeded
    with target.stack.sessions()() as session:
        assert get_job(session, fit[:4]).id == fit
        for prefix in ("%%%%", "____", fit[:3] + "%", fit[:3] + "_", "%" + fit[1:6]):
            with pytest.raises(NotFound):
                get_job(session, prefix)
