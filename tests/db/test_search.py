"""search_jobs: --where over real rows, the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import create_job
from db.models import Job, JobTag, Metric, Param
from db.search import search_jobs
from kiln.query import parse_columns, parse_order, parse_query

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SVI = {"kind": "linreg_fit", "guide": "AutoNormal", "lr": 0.02, "steps": 100}
MCMC = {"kind": "user_mcmc_fit", "method": "nuts", "chains": 4}


def add_job(session: Session, job_id: str, n: int, spec: dict[str, Any], *,
            name: str | None = None, owner: str | None = None, final_loss: float | None = None,
            tags: dict[str, str] | None = None, params: dict[str, dict[str, float]] | None = None,
            metrics: Sequence[tuple[str, int, float]] = ()) -> None:  # fmt: skip
    """A succeeded job created n hours after T0, with its tags, site summaries and metrics."""
    info: dict[str, Any] = {"final_loss": final_loss} if final_loss is not None else {}
    create_job(session, id=job_id, kind="fit", spec=spec, model="linreg", queue="cpu",
               total_steps=100, info=info, name=name, owner=owner,
               created_at=T0 + timedelta(hours=n))  # fmt: skip
    for key, text in (tags or {}).items():
        session.add(JobTag(job_id=job_id, key=key, value=text))
    for position, (site, stats) in enumerate((params or {}).items()):
        session.add(Param(job_id=job_id, site=site, position=position, shape=[], stats=b"",
                          **stats))  # fmt: skip
    for metric, step, value in metrics:
        session.add(Metric(job_id=job_id, name=metric, step=step, epoch=0, value=value))


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Five jobs: svi fits a-c (study a or b, rugged's mean), an MCMC fit d, an untagged e.
    The database alone (no broker: these tests send nothing)."""
    from db.session import make_engine, make_sessionmaker
    from kiln.settings import normalise_db_url

    engine = make_engine(normalise_db_url(db_url))
    made = make_sessionmaker(engine)
    with made() as session:
        add_job(session, "job0000a", 1, SVI, name="rugged-base", owner="alice", final_loss=2.5,
                tags={"study": "a"}, params={"rugged": {"mean": -0.1, "sd": 0.1}},
                metrics=[("test_accuracy", 1, 0.5), ("test_accuracy", 2, 0.9)])  # fmt: skip
        add_job(session, "job0000b", 2, {**SVI, "lr": 0.1}, name="rugged-fast", owner="alice",
                final_loss=1.5, tags={"study": "b"}, params={"rugged": {"mean": -0.3}},
                metrics=[("test_accuracy", 1, 0.95), ("test_accuracy", 5, 0.6)])  # fmt: skip
        add_job(session, "job0000c", 3, {**SVI, "guide": "AutoDelta"}, owner="bob",
                final_loss=0.5, tags={"study": "b", "stage": "final"},
                params={"rugged": {"mean": -0.05}})  # fmt: skip
        add_job(session, "job0000d", 4, MCMC, name="eight", owner="bob",
                params={"theta": {"mean": 1.0, "r_hat": 1.2}})  # fmt: skip
        add_job(session, "job0000e", 5, {**SVI, "lr": "0.02"}, final_loss=3.0)
        session.commit()
    yield made
    engine.dispose()


def ids(sessions: sessionmaker[Session], where: str | None, order: str | None = None,
        **options: Any) -> list[str]:  # fmt: skip
    with sessions() as session:
        found = search_jobs(session, parse_query(where) if where else None,
                            parse_order(order) if order else (), **options)  # fmt: skip
        return [job.id[-1] for job, _ in found]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("tag.study = 'a' OR params.rugged.mean < -0.2", "ba"),
        ("(tag.study = 'a' OR tag.study = 'b') AND NOT guide = 'AutoDelta'", "ba"),
        ("NOT tag.study = 'b'", "eda"),  # untagged jobs are not in study b
        ("tag.study != 'b'", "a"),  # a comparison on a missing tag is false
        ("tag.stage IS NULL AND method = 'svi'", "eba"),
        ("method = 'nuts' AND params.theta.r_hat > 1.1", "d"),
        ("params.rugged.r_hat IS NULL", "edcba"),
        ("metrics.test_accuracy > 0.8", "a"),  # the latest value: b's is 0.6
        ("metrics.test_accuracy IS NOT NULL", "ba"),
        ("spec.lr > 0.05", "b"),
        ("spec.lr = 0.02", "ca"),  # e's lr is the text '0.02', not a number
        ("spec.lr = '0.02'", "e"),
        ("spec.lr NOT IN (0.02, 0.1)", "e"),
        ("NOT spec.lr < 0.05", "edb"),
        ("spec.method IN ('nuts', 'hmc')", "d"),
        ("final_loss <= 1.5 OR final_loss IS NULL", "dcb"),
        ("NOT final_loss > 1", "dc"),
        ("name LIKE 'RUGGED-%'", "ba"),
        ("name NOT LIKE 'rugged%'", "d"),
        ("NOT name LIKE 'rugged%'", "edc"),
        ("owner IN ('bob') AND kind = 'fit'", "dc"),
        ("created >= '2026-01-01T03:00:00Z' AND created < '2026-01-01 05:00'", "dc"),
        ("finished IS NULL AND status = 'queued'", "edcba"),
        ("name = '''; DROP TABLE jobs; --'", ""),
        ("tag.study = '''; DROP TABLE jobs; --' OR spec.x.y = ';--'", ""),
    ],
)
def test_a_where_finds_exactly_the_jobs_it_describes(
    sessions: sessionmaker[Session], where: str, expected: str
) -> None:
    assert "".join(ids(sessions, where)) == expected
    with sessions() as session:  # and a quoted attack is only a string
        assert session.scalar(select(func.count()).select_from(Job)) == 5


def test_order_by_sorts_missing_values_last_then_newest_first(
    sessions: sessionmaker[Session],
) -> None:
    assert ids(sessions, None, "final_loss") == list("cbaed")
    assert ids(sessions, None, "final_loss desc") == list("eabcd")
    assert ids(sessions, None, "params.rugged.mean asc, created") == list("bacde")
    assert ids(sessions, None, "spec.lr desc") == list("bcaed")  # numbers before the text
    assert ids(sessions, None, "tag.study desc") == list("cbaed")


def test_paging_takes_the_next_page_in_the_same_order(sessions: sessionmaker[Session]) -> None:
    pages = [ids(sessions, "kind = 'fit'", "name", limit=2, offset=k) for k in (0, 2, 4)]
    assert pages == [["d", "a"], ["b", "e"], ["c"]]


def test_an_owner_sees_only_their_jobs_whatever_the_query_says(
    sessions: sessionmaker[Session],
) -> None:
    assert ids(sessions, "owner = 'bob'", owner="alice") == []
    assert ids(sessions, "owner = 'bob' OR final_loss > 0", owner="alice") == ["b", "a"]
    assert ids(sessions, "NOT owner = 'alice'", owner="bob") == ["d", "c"]


def test_columns_come_back_json_ready_with_each_job(sessions: sessionmaker[Session]) -> None:
    columns = parse_columns("name,created,final_loss,params.rugged.mean,spec.lr,tag.study,"
                            "metrics.test_accuracy,method,guide")  # fmt: skip
    with sessions() as session:
        found = search_jobs(session, parse_query("name = 'rugged-fast'"), (), columns)
    assert [values for _, values in found] == [{
        "name": "rugged-fast", "created": "2026-01-01T02:00:00+00:00", "final_loss": 1.5,
        "params.rugged.mean": -0.3, "spec.lr": 0.1, "tag.study": "b",
        "metrics.test_accuracy": 0.6, "method": "svi", "guide": "AutoNormal",
    }]  # fmt: skip
