"""What every predict runner reads of its fit (typed spec, data, source, fitted state), and how
every predict job stores its draws and info."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from db.datasets import load_dataset
from db.jobs import get_job
from db.results import get_fitted_state, store_predict_results
from db.sources import load_source
from inference.posterior import summarize_draws
from inference.state import READABLE_STATE_FORMATS
from kiln.errors import UserError
from kiln.jobinfo import PredictInfo
from kiln.records import SiteStats
from kiln.specs import BaseSpec, PredictOptions, parse_job_spec
from worker.context import DataBlob, JobContext

F = TypeVar("F", bound=BaseSpec)
P = TypeVar("P", bound=PredictOptions)


@dataclass(frozen=True, slots=True)
class Fitted:
    """A succeeded fit as a predict job needs it."""

    id: str
    spec: Any
    data: DataBlob | None
    source: str | None
    state: bytes | None  # the fitted state (None for a fit that stores draws instead)


def load_fit(ctx: JobContext[P], kind: type[F], *, state: bool = True) -> Fitted:
    """The predict job's fit, which must be a `kind` that succeeded; with `state`, its
    fitted state (a UserError says why there is none to predict from)."""
    fit_id = ctx.spec.from_job
    with ctx.sessions() as session:
        fit = get_job(session, fit_id)
        spec = parse_job_spec(dict(fit.spec))
        if not isinstance(spec, kind):
            raise UserError(f"job {fit_id} is a {spec.kind} job, not a {kind.__name__}")
        if fit.status != "succeeded":
            raise UserError(f"its fit {fit_id} is {fit.status}, not succeeded")
        blob = None
        if fit.dataset_id is not None:
            d = load_dataset(session, fit.dataset_id)
            blob = DataBlob(d.name, d.format, bytes(d.content))
        source = load_source(session, fit.source_id).content if fit.source_id else None
        return Fitted(fit_id, spec, blob, source, stored_state(session, fit_id) if state else None)


def stored_state(session: Session, fit_id: str) -> bytes:
    """A succeeded fit's fitted state, or a UserError saying why there is none to use."""
    stored = get_fitted_state(session, fit_id)
    if stored is None:
        raise UserError(f"fit {fit_id} stored no fitted state to predict from")
    if stored.format not in READABLE_STATE_FORMATS:
        raise UserError(f"fit {fit_id}: fitted state format {stored.format!r} is not supported")
    return bytes(stored.content)


def store_prediction(
    ctx: JobContext[P], session: Session,
    sites: dict[str, tuple[str, np.ndarray]], details: dict[str, Any],
) -> None:  # fmt: skip
    """A predict job's draws by site (its latent draws summarised as params) and its info:
    the facts the model reported land in their typed fields, the rest beside them."""
    params: list[SiteStats] = [
        summarize_draws(site, values) for site, (kind, values) in sites.items()
        if kind == "posterior"
    ]  # fmt: skip
    store_predict_results(session, ctx.job_id, sites, params)
    info = ctx.info
    assert isinstance(info, PredictInfo)
    info.add_facts(details)
    info.from_job = ctx.spec.from_job
    info.num_samples = ctx.spec.num_samples
    info.sites = sorted(sites)
    info.predict_seconds = ctx.seconds()
