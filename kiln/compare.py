"""Compare fits by their expected log predictive density: PSIS-LOO (or WAIC) from each job's
stored pointwise log-likelihood, ranked as arviz.compare ranks them, with Pareto-k counts.

Reads stored results only (numpy, xarray, ArviZ; no torch): a user model's fit stored its
log-likelihood; the built-in regression's is computed from its stored draws and data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import SpecError
from kiln.export_loglik import pointwise

if TYPE_CHECKING:
    import arviz
    import pandas as pd

    from kiln.export import JobResults

ICS = ("loo", "waic")
MAX_COMPARE = 20  # jobs in one comparison
BAD_K = 0.7  # Pareto k above this: that point's LOO estimate is unreliable
# Our columns, in order; ArviZ's `elpd_diff` is `d_loo` (or `d_waic`) here.
COLUMNS = (
    "rank",
    "elpd_{ic}",
    "se",
    "p_{ic}",
    "d_{ic}",
    "dse",
    "weight",
    "warning",
    "pareto_k_bad",
)


def check_ids(ids: Sequence[str], ic: str) -> list[str]:
    """The ids to compare: 2 to MAX_COMPARE, no repeats; `ic` one of ICS. Raises SpecError."""
    if ic not in ICS:
        raise SpecError(f"--ic: must be one of {', '.join(ICS)} (got {str(ic)[:40]!r})", "ic")
    unique = list(dict.fromkeys(str(i)[:64] for i in ids))
    if len(unique) < 2:
        raise SpecError(
            f"compare needs at least two different job ids (got {len(unique)}); give the"
            " fits to rank, e.g. `jobs compare A B`"
        )
    if len(unique) > MAX_COMPARE:
        raise SpecError(f"compare takes at most {MAX_COMPARE} jobs (got {len(unique)})")
    return unique


def loo_data(r: JobResults) -> arviz.InferenceData:
    """InferenceData for az.loo/az.compare: the job's posterior and one log-likelihood variable
    `log_lik` (chain, draw, point), every observed site's data points side by side (the same
    LOO as az.loo on the export's log_likelihood group, where that has one site)."""
    from kiln.export import import_arviz_quietly, to_inference_data

    import_arviz_quietly()
    import arviz as az
    import xarray as xr

    values = pointwise(r)
    if not values:
        why = r.info.get("log_likelihood_note") or (
            f"rows without the response `{r.response}`: predict on rows that have it"
            if r.y is not None and not np.isfinite(r.y).all()
            else "it is not a fit of a user model, a library model or the built-in"
            " regression, or ran before Kiln stored log-likelihoods"
        )
        raise SpecError(f"job {r.job_id} has no stored pointwise log-likelihood ({why}); refit"
                        " it, or leave it out of the comparison")  # fmt: skip
    idata = to_inference_data(r)
    group = idata["log_likelihood"]
    flat = np.concatenate(
        [group[s].values.reshape(group.sizes["chain"], group.sizes["draw"], -1) for s in values],
        axis=-1,
    )
    coords = {"chain": group["chain"].values, "draw": group["draw"].values}
    log_lik = xr.Dataset({"log_lik": (("chain", "draw", "point"), flat)}, coords=coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.InferenceData(posterior=idata["posterior"], log_likelihood=log_lik)


def observations(r: JobResults) -> dict[str, np.ndarray]:
    """What the job's log-likelihood is of: the observed values by site."""
    if r.log_lik:
        return {s: np.asarray(r.observed[s]) for s in r.log_lik if s in r.observed}
    return {"obs": np.asarray(r.y)} if r.y is not None else {}


def same_observations(results: Sequence[JobResults]) -> None:
    """Refuse jobs whose log-likelihoods are of different data (LOO would compare nothing)."""
    first = results[0]
    want = observations(first)
    for r in results[1:]:
        have = observations(r)
        same = set(have) == set(want) and all(
            have[s].shape == want[s].shape and np.array_equal(have[s], want[s], equal_nan=True)
            for s in want
        )
        if not same:
            raise SpecError(
                f"job {r.job_id} observed different data than job {first.job_id}"
                f" (sites {sorted(have)} vs {sorted(want)}); LOO compares fits of the same"
                " observations only"
            )


def compare_results(results: Sequence[JobResults], ic: str = "loo") -> pd.DataFrame:
    """arviz.compare of the jobs, by job id, best first: rank, elpd_IC, se, p_IC, d_IC, dse,
    weight, warning, pareto_k_bad (points with k > 0.7; LOO only)."""
    import arviz as az

    check_ids([r.job_id for r in results], ic)
    data = {r.job_id: loo_data(r) for r in results}
    same_observations(results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns of high k; the table says so per job
        table = az.compare(data, ic="waic" if ic == "waic" else "loo")
        bad = {}
        if ic == "loo":
            for job_id, idata in data.items():
                k = np.asarray(az.loo(idata, pointwise=True).pareto_k)
                bad[job_id] = int((k > BAD_K).sum())
    table = table.rename(columns={"elpd_diff": f"d_{ic}"})
    table["pareto_k_bad"] = [bad.get(str(i)) for i in table.index]
    table.index.name = "id"
    return table[[c.format(ic=ic) for c in COLUMNS]]


def to_json(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per job, best first: `id` and every column (null for NaN)."""
    out = []
    for job_id, row in table.iterrows():
        entry: dict[str, Any] = {"id": str(job_id)}
        for column, value in row.items():
            entry[str(column)] = _plain(value)
        out.append(entry)
    return out


def from_json(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The table to_json wrote (the API's answer), indexed by job id."""
    import pandas as pd

    table = pd.DataFrame([dict(e) for e in entries])
    return table.set_index("id") if "id" in table else table


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
