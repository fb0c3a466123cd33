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
