"""Loss rows a page at a time, for long fits read over the HTTP API: thinned and the tail."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Loss


def get_loss_page(
    session: Session, job_id: str, every: int = 1, tail: int | None = None
) -> list[tuple[int, float]]:
    """(step, loss) by step: the steps that are multiples of `every`, and of those only the
    last `tail` when given. The database thins and cuts, so a million-step fit is not read."""
    query = select(Loss.step, Loss.loss).where(Loss.job_id == job_id)
    if every > 1:
        query = query.where(Loss.step % every == 0)
    if tail is not None:
        rows = session.execute(query.order_by(Loss.step.desc()).limit(tail)).all()[::-1]
    else:
        rows = session.execute(query.order_by(Loss.step)).all()
    return [(int(step), float(loss)) for step, loss in rows]


def losses_after(session: Session, job_id: str, after: int, limit: int) -> list[tuple[int, float]]:
    """(step, loss) of the steps after `after`, by step, at most `limit` of them: evenly
    thinned (the last kept) when more were stored since."""
    base = select(Loss.step, Loss.loss).where(Loss.job_id == job_id, Loss.step > after)
    rows = session.execute(base.order_by(Loss.step).limit(limit + 1)).all()
    if len(rows) > limit:  # a backlog: thin it in the database, by the steps' spacing
        newest = session.scalar(
            select(Loss.step).where(Loss.job_id == job_id).order_by(Loss.step.desc()).limit(1)
        )
        stride = max(1, -(-(int(newest or after) - after) // limit))
        rows = session.execute(
            base.where((Loss.step - after - 1) % stride == 0).order_by(Loss.step).limit(limit)
        ).all()
        last = session.execute(base.order_by(Loss.step.desc()).limit(1)).all()
        if last and (not rows or rows[-1][0] != last[0][0]):
            rows = [*rows[: limit - 1], last[0]]
    return [(int(step), float(loss)) for step, loss in rows]
