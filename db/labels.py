"""Names and tags of jobs and sweeps: write them with a submission, change tags later, read
them for many jobs at once, and find a job or sweep by its name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, JobTag, Sweep
from kiln.errors import NotFound, SpecError
from kiln.labels import MAX_TAGS, Labels

Labelled = TypeVar("Labelled", Job, Sweep)


def check_name_free(session: Session, table: type[Job] | type[Sweep], name: str,
                    owner: str | None) -> None:  # fmt: skip
    """A SpecError when `owner` (None: direct submissions) already has a job (or sweep) called
    `name`. The unique index (migration 0012) still decides a race between two submissions."""
    taken = session.scalar(
        select(table.id).where(func.coalesce(table.owner, "") == (owner or ""),
                               table.name == name).limit(1)
    )  # fmt: skip
    if taken is not None:
        what = "job" if table is Job else "sweep"
        raise SpecError(
            f"--name {name}: already the name of {what} {taken}; pick another name, or find "
            f"that one with `kiln show {name}`", "name",
        )  # fmt: skip


def commit_labelled(session: Session, name: str | None) -> None:
    """Commit a submission; when another one took the same name in between (the unique index
    refuses it), roll back and raise the SpecError check_name_free would have."""
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        if name is not None and "owner_name" in str(e.orig):
            raise SpecError(f"--name {name}: another submission just took that name; pick "
                            "another name", "name") from None  # fmt: skip
        raise


def label_job(session: Session, job: Job, labels: Labels, *, with_name: bool = True) -> None:
    """Give a new job its name (if `with_name`) and tags; does not commit."""
    if with_name and labels.name is not None:
        check_name_free(session, Job, labels.name, job.owner)
        job.name = labels.name
    for key, value in labels.tags.items():
        session.add(JobTag(job_id=job.id, key=key, value=value))
    session.flush()


def label_sweep(session: Session, sweep: Sweep, labels: Labels, member_ids: Sequence[str]) -> None:
    """Give a new sweep its name and tags, and its members the same tags; does not commit."""
    if labels.name is not None:
        check_name_free(session, Sweep, labels.name, sweep.owner)
        sweep.name = labels.name
    sweep.tags = dict(labels.tags)
    rows = [{"job_id": m, "key": k, "value": v} for m in member_ids for k, v in labels.tags.items()]
    if rows:
        session.execute(insert(JobTag), rows)


def retag_jobs(session: Session, job_ids: Sequence[str], set_: Mapping[str, str],
               remove: Iterable[str] = ()) -> None:  # fmt: skip
    """Set tags (replacing a key's value) and remove keys on these jobs; does not commit.
    A job would carry more than MAX_TAGS tags: a SpecError and nothing changed."""
    keys = [*set_, *remove]
    for chunk in _chunks(job_ids):
        if keys:
            session.execute(delete(JobTag).where(JobTag.job_id.in_(chunk), JobTag.key.in_(keys)))
        for job_id in chunk:
            for key, value in set_.items():
                session.add(JobTag(job_id=job_id, key=key, value=value))
    session.flush()
    most = session.scalar(
        select(func.count()).select_from(JobTag).where(JobTag.job_id.in_(job_ids[:1000]))
        .group_by(JobTag.job_id).order_by(func.count().desc()).limit(1)
    )  # fmt: skip
    if most is not None and most > MAX_TAGS:
        raise SpecError(f"tags: a job carries at most {MAX_TAGS} tags; remove some first", "tags")


def retag_job(session: Session, job: Job, set_: Mapping[str, str],
              remove: Iterable[str] = ()) -> dict[str, str]:  # fmt: skip
    """Change a job's tags and commit; its tags after the change."""
    retag_jobs(session, [job.id], set_, remove)
    session.commit()
    return tags_of(session, [job.id]).get(job.id, {})


def retag_sweep(session: Session, sweep: Sweep, set_: Mapping[str, str],
                remove: Iterable[str] = ()) -> dict[str, str]:  # fmt: skip
    """Change a sweep's tags and every member's, and commit; the sweep's tags after."""
    dropped = list(remove)
    members = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep.id)))
    retag_jobs(session, members, set_, dropped)
    merged = {**(sweep.tags or {}), **set_}
    sweep.tags = {k: v for k, v in sorted(merged.items()) if k not in dropped}
    if len(sweep.tags) > MAX_TAGS:
        raise SpecError(f"tags: a sweep carries at most {MAX_TAGS} tags; remove some first",
                        "tags")  # fmt: skip
    session.commit()
    return dict(sweep.tags)


def tags_of(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each job's tags, sorted by key (jobs without tags are absent)."""
    tags: dict[str, dict[str, str]] = {}
    for chunk in _chunks(job_ids):
        rows = session.execute(
            select(JobTag.job_id, JobTag.key, JobTag.value)
            .where(JobTag.job_id.in_(chunk)).order_by(JobTag.job_id, JobTag.key)
        ).all()  # fmt: skip
        for job_id, key, value in rows:
            tags.setdefault(job_id, {})[key] = value
    return tags


def job_by_name(session: Session, name: str, owner: str | None) -> Job | None:
    """The job called `name`: of `owner` when given (the HTTP API), else of anyone, as long as
    only one owner uses that name (NotFound names the ambiguity otherwise)."""
    return _by_name(session, Job, name, owner)


def sweep_by_name(session: Session, name: str, owner: str | None) -> Sweep | None:
    """The sweep called `name`, as job_by_name."""
    return _by_name(session, Sweep, name, owner)


def _by_name(session: Session, table: type[Labelled], name: str,
             owner: str | None) -> Labelled | None:  # fmt: skip
    query = select(table).where(table.name == name)
    if owner is not None:
        query = query.where(table.owner == owner)
    found = session.scalars(query.limit(2)).all()
    if len(found) > 1:
        what = "jobs" if table is Job else "sweeps"
        raise NotFound(f"name {name!r} is used by {what} of different owners; give the id")
    return found[0] if found else None


def _chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """Bound each IN list (SQLite allows 32,766 parameters; PostgreSQL 65,535)."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]
