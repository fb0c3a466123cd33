"""Fit results: losses, posterior summaries, guide parameters and the fitted state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.codec import decode_array, encode_array
from db.models import FittedState, GuideParam, Loss, Param, Sample
from kiln.records import STATS, SiteStats


def store_fit_results(
    session: Session,
    job_id: str,
    *,
    sites: Sequence[SiteStats],
    draws: Mapping[str, np.ndarray],
    guide_params: Mapping[str, np.ndarray],
    state: bytes,
    state_format: str,
    guide: str,
) -> None:
    """Replace this job's params, posterior draws, guide params and fitted state. No commit."""
    for table in (Param, Sample, GuideParam, FittedState):
        session.execute(delete(table).where(table.job_id == job_id))
    for position, s in enumerate(sites):
        stacked = np.stack([np.asarray(getattr(s, k), dtype=np.float64) for k in STATS])
        scalar = {k: float(stacked[i].reshape(-1)[0]) for i, k in enumerate(STATS)}
        session.add(
            Param(
                job_id=job_id,
                site=s.site,
                position=position,
                shape=list(s.shape),
                stats=encode_array(stacked),
                **(scalar if stacked[0].size == 1 else dict.fromkeys(STATS)),
            )
        )
    for site, values in draws.items():
        session.add(
            Sample(
                job_id=job_id,
                site=site,
                kind="posterior",
                num_samples=len(values),
                shape=list(values.shape[1:]),
                draws=encode_array(values),
            )
        )
    for name, value in guide_params.items():
        session.add(
            GuideParam(
                job_id=job_id,
                name=name,
                shape=list(value.shape),
                dtype=str(value.dtype),
                value=encode_array(value),
            )
        )
    session.add(FittedState(job_id=job_id, format=state_format, guide=guide, content=state))


def get_losses(session: Session, job_id: str) -> list[tuple[int, float]]:
    rows = session.execute(
        select(Loss.step, Loss.loss).where(Loss.job_id == job_id).order_by(Loss.step)
    ).all()
    return [(int(step), float(loss)) for step, loss in rows]


def get_params(session: Session, job_id: str) -> list[SiteStats]:
    rows = session.scalars(
        select(Param).where(Param.job_id == job_id).order_by(Param.position)
    ).all()
    out = []
    for row in rows:
        stacked = decode_array(row.stats)
        out.append(SiteStats(row.site, tuple(row.shape), *stacked))
    return out


def get_draws(session: Session, job_id: str, kind: str = "posterior") -> dict[str, np.ndarray]:
    rows = session.scalars(select(Sample).where(Sample.job_id == job_id, Sample.kind == kind)).all()
    return {row.site: decode_array(row.draws) for row in rows}


def get_guide_params(session: Session, job_id: str) -> dict[str, np.ndarray]:
    rows = session.scalars(select(GuideParam).where(GuideParam.job_id == job_id)).all()
    return {row.name: decode_array(row.value) for row in rows}


def get_fitted_state(session: Session, job_id: str) -> FittedState | None:
    return session.get(FittedState, job_id)
