"""A user model's pointwise log-likelihood from the sandbox's result frame: checked against
inference.loglik's caps, then stored as Sample rows beside the fit's draws.

Stored rows: `log_likelihood:SITE` (kind `log_likelihood`, (draws used, *data shape)),
`observed:SITE` (kind `data`, (1, *value shape)) and `__loglik_draws__` (kind `data`, the
positions of the draws used among the fit's chain-major draws). The plate dims of every site
go into the job's info as `site_dims`, and why there is no log-likelihood as
`log_likelihood_note`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.models import Sample
from db.results import sample_row, summary_of
from inference.loglik import MAX_DIM_NAME, MAX_DRAWS, MAX_FLOATS, LogLik
from kiln.errors import ModelError
from worker.sandbox.wire import Frame

LOGLIK_PREFIX = "log_likelihood:"
OBSERVED_PREFIX = "observed:"
DRAWS_SITE = "__loglik_draws__"
MAX_SITE_CHARS = 200  # Sample.site holds 255, with the prefix
MAX_SITES = 10_000
MAX_DIMS = 32

Rows = dict[str, tuple[str, np.ndarray]]


def read_loglik(result: Frame, total_draws: int) -> tuple[Rows, dict[str, Any]]:
    """(rows to store, info facts) from a fit's result frame. Raises ModelError for arrays
    that break the caps or do not fit together (a sandbox can send anything)."""
    facts_in = result.header.get("loglik")
    facts: dict[str, Any] = {}
    if isinstance(facts_in, dict):
        facts["site_dims"] = _dims(facts_in.get("dims"))
        note = facts_in.get("note")
        if isinstance(note, str) and note:
            facts["log_likelihood_note"] = note[:1000]
    values = result.group("loglik")
    if not values:
        return {}, facts
    draws = result.arrays.get("loglik_draws")
    if (
        draws is None or draws.ndim != 1 or draws.dtype.kind not in "iu"
        or not 0 < len(draws) <= MAX_DRAWS
        or int(draws.min()) < 0 or int(draws.max()) >= total_draws
        or not bool((np.diff(draws) > 0).all())
    ):  # fmt: skip
        raise ModelError("the model's process sent log-likelihood draws that are not its own")
    if len(values) > MAX_SITES or sum(v.size for v in values.values()) > MAX_FLOATS:
        raise ModelError(f"the model's process sent over {MAX_FLOATS} log-likelihood values")
    observed = result.group("observed")
    rows: Rows = {}
    for site, v in values.items():
        if len(site) > MAX_SITE_CHARS or v.dtype.kind != "f" or v.ndim < 1 or len(v) != len(draws):
            raise ModelError(
                f"the model's process sent a malformed log-likelihood of `{site[:80]}`"
            )
        if np.isnan(v).any() or np.isposinf(v).any():
            facts["log_likelihood_note"] = f"log-likelihood of `{site}` has NaN; not stored"
            return {}, facts
        rows[LOGLIK_PREFIX + site] = ("log_likelihood", np.asarray(v, dtype=np.float64))
    for site, v in observed.items():
        if (
            site not in values
            or v.size > MAX_FLOATS
            or v.shape[: values[site].ndim - 1] != (values[site].shape[1:])
        ):
            raise ModelError(f"the model's process sent malformed observed data of `{site[:80]}`")
        rows[OBSERVED_PREFIX + site] = ("data", np.asarray(v)[None, ...])
    rows[DRAWS_SITE] = ("data", np.asarray(draws, dtype=np.int64)[None, :])
    return rows, facts


def loglik_rows(found: LogLik) -> tuple[Rows, dict[str, Any]]:
    """(rows to store, info facts) from a log-likelihood computed in this process (a library
    model's): the layout read_loglik gives a sandbox's, without re-checking our own arrays."""
    facts: dict[str, Any] = {"site_dims": _dims(found.dims)}
    if found.note:
        facts["log_likelihood_note"] = found.note[:1000]
    if not found.values:
        return {}, facts
    rows: Rows = {
        LOGLIK_PREFIX + site: ("log_likelihood", np.asarray(v, dtype=np.float64))
        for site, v in found.values.items()
    }
    for site, v in found.observed.items():
        rows[OBSERVED_PREFIX + site] = ("data", np.asarray(v)[None, ...])
    rows[DRAWS_SITE] = ("data", np.asarray(found.draws, dtype=np.int64)[None, :])
    return rows, facts


def _dims(sent: Any) -> dict[str, list[str | None]]:
    """The sandbox's plate names by site, kept only where well formed and short."""
    if not isinstance(sent, dict) or len(sent) > MAX_SITES:
        return {}
    out: dict[str, list[str | None]] = {}
    for site, names in sent.items():
        if (
            isinstance(site, str) and len(site) <= MAX_SITE_CHARS
            and isinstance(names, list) and len(names) <= MAX_DIMS
            and all(n is None or (isinstance(n, str) and 0 < len(n) <= MAX_DIM_NAME)
                    for n in names)
        ):  # fmt: skip
            out[site] = list(names)
    return out


def add_loglik_rows(session: Session, job_id: str, rows: Mapping[str, tuple[str, np.ndarray]],
                    first_position: int) -> None:  # fmt: skip
    """Add the rows after the job's other samples (positions from `first_position`)."""
    for i, (site, (kind, values)) in enumerate(rows.items()):
        stats = summary_of(values) if kind != "data" else None
        session.add(Sample(**sample_row(job_id, first_position + i, site, kind, values, stats)))
