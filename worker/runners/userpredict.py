"""A user model's predict job: posterior predictive draws of its observed and deterministic
sites, from an SVI fit's guide or an MCMC fit's stored draws, for its data or new data. The
model runs in a sandbox process (worker/sandbox); this side reads the fit and stores."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.results import get_draws
from inference.events import Event
from kiln.errors import ModelError, UserError
from kiln.specs import UserMcmcFitSpec, UserModelRef, UserPredictSpec, UserSviFitSpec
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.fitted import Fitted, load_fit, store_prediction, stored_state
from worker.runners.loglik import add_loglik_rows, read_loglik
from worker.runners.sandboxed import allow_user_code, data_arrays, in_sandbox
from worker.sandbox.wire import as_bytes_array

log = logging.getLogger(__name__)

OBSERVED_PREFIX = "observed:"  # a data site holding the values the data gave an observed site
SITE_KINDS = ("predictive", "deterministic", "posterior")


@dataclass
class _UserPredict:
    fit: Fitted
    state: bytes = b""  # an SVI fit's fitted state
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # an MCMC fit's latent draws
    sites: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    vectorized: bool = False
    loglik: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # loglik.py's rows


class UserPredict(Runner[UserPredictSpec, _UserPredict]):
    kind = "user_predict"

    def prepare(self, ctx: JobContext[UserPredictSpec]) -> _UserPredict:
        allow_user_code(ctx)
        fit = load_fit(ctx, UserModelRef, state=False)
        if fit.source is None or fit.data is None:
            raise UserError(f"fit {fit.id} has no stored model source or data")
        p = _UserPredict(fit)
        with ctx.sessions() as session:  # the guide's state, or the MCMC draws
            if isinstance(fit.spec, UserSviFitSpec):
                p.state = stored_state(session, fit.id)
            else:
                p.draws = get_draws(session, fit.id, kind="posterior")
        return p

    def run(self, ctx: JobContext[UserPredictSpec], p: _UserPredict) -> Iterator[Event]:
        fit_spec: UserSviFitSpec | UserMcmcFitSpec = p.fit.spec
        header, arrays = data_arrays("fit_data", p.fit.data)
        more_header, more_arrays = data_arrays("data", ctx.data)
        header.update(more_header, source=p.fit.source, fit_spec=fit_spec.model_dump(mode="json"))
        arrays.update(more_arrays)
        if p.state:
            arrays["state"] = as_bytes_array(p.state)
        arrays.update({f"draw/{site}": values for site, values in p.draws.items()})
        result = yield from in_sandbox(ctx, header, arrays)
        kinds = result.header.get("kinds")
        if not isinstance(kinds, dict) or not all(k in SITE_KINDS for k in kinds.values()):
            raise ModelError("the model's process sent a prediction with malformed site kinds")
        drawn = result.group("site")
        if set(drawn) != set(kinds):
            raise ModelError("the model's process sent a prediction whose sites do not match")
        for site, values in drawn.items():
            if values.ndim == 0 or values.shape[0] != ctx.spec.num_samples:
                raise ModelError(
                    f"the model's process sent `{site}` shaped {values.shape}, not"
                    f" {ctx.spec.num_samples} draws"
                )  # fmt: skip
            p.sites[site] = (str(kinds[site]), values)
        p.observed = {k: v for k, v in result.group("observed").items() if k in drawn}
        p.vectorized = result.header.get("vectorized") is True
        # The observed values' log-likelihood per draw (test-set log predictive density, for
        # compare); their `observed:` rows are stored with the prediction's already.
        rows, facts = read_loglik(result, ctx.spec.num_samples)
        p.loglik = {k: v for k, v in rows.items() if not k.startswith(OBSERVED_PREFIX)}
        ctx.info.add_facts(facts)

    def store(self, ctx: JobContext[UserPredictSpec], p: _UserPredict, session: Session) -> None:
        sites = dict(p.sites)
        for site, values in p.observed.items():
            sites[OBSERVED_PREFIX + site] = ("data", values[None, ...])
        details: dict[str, Any] = {"vectorized": p.vectorized,
                                   "method": getattr(p.fit.spec, "method", "svi")}  # fmt: skip
        coverage = _coverage(p)
        if coverage is not None:
            details["coverage_90"], details["observed"] = coverage
        store_prediction(ctx, session, sites, details)
        add_loglik_rows(session, ctx.job_id, p.loglik, len(sites))
        log.info("job %s: %d draws of %s from %s", ctx.job_id, ctx.spec.num_samples,
                 ", ".join(s for s, (k, _) in p.sites.items() if k == "predictive"),
                 ctx.spec.from_job)  # fmt: skip


def _coverage(p: _UserPredict) -> tuple[float, int] | None:
    """The share of observed values inside their 90% predictive interval (all sites)."""
    inside, total = 0, 0
    for site, observed in p.observed.items():
        kind, draws = p.sites[site]
        if kind != "predictive" or draws.shape[1:] != observed.shape:
            continue
        low, high = np.quantile(draws, [0.05, 0.95], axis=0)
        finite = np.isfinite(observed)
        inside += int(((observed >= low) & (observed <= high) & finite).sum())
        total += int(finite.sum())
    return (inside / total, total) if total else None
