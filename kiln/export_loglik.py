"""The pointwise log-likelihood of a job's stored results, in numpy (no torch), and the ArviZ
groups built from it: `log_likelihood` (what az.loo and az.waic read) and dim names taken from
a user model's plates.

Two sources: a user model's fit stored `log_likelihood:SITE` rows (computed in its sandbox,
see worker/runners/loglik.py); the built-in regression's is computed here from its stored
draws and data (exact: log Normal(y | mean, sigma)).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import xarray as xr


class JobResults(Protocol):
    """What this module reads of kiln.export.JobResults (which imports this module)."""

    job_id: str
    fit_spec: dict[str, Any]
    info: dict[str, Any]
    posterior: dict[str, np.ndarray]
    row_sites: dict[str, np.ndarray]
    observed: dict[str, np.ndarray]
    log_lik: dict[str, np.ndarray]
    log_lik_draws: np.ndarray | None
    X: np.ndarray | None
    y: np.ndarray | None
    rows: np.ndarray | None
    terms: tuple[str, ...]
    new_data: bool
    chains: int

    @property
    def num_samples(self) -> int: ...


LOGLIK_PREFIX = "log_likelihood:"
OBSERVED_PREFIX = "observed:"  # the observed values of a site, kind `data`
DRAWS_SITE = "__loglik_draws__"


def axis_names(
    site: str, ndim: int, plates: Sequence[str | None] | None, taken: Collection[str]
) -> tuple[str, ...]:
    """A name per axis of one draw of `site`: the plate's where the model named one (and it
    clashes with no variable), else ArviZ's `SITE_dim_I`."""
    known = list(plates) if plates is not None and len(plates) == ndim else [None] * ndim
    return tuple(
        name if name and name not in taken else f"{site}_dim_{i}" for i, name in enumerate(known)
    )


def plate_dims(r: JobResults) -> dict[str, list[str | None]]:
    """A user model's plate names by site, as its fit recorded them (info `site_dims`)."""
    dims = r.info.get("site_dims")
    if not isinstance(dims, dict):
        return {}
    return {str(k): list(v) for k, v in dims.items() if isinstance(v, list)}


def pointwise(r: JobResults) -> dict[str, np.ndarray]:
    """{observed site: log-likelihood (draws used, *data shape)}: stored, or the regression's."""
    if r.log_lik:
        return dict(r.log_lik)
    linreg = linreg_log_likelihood(r)
    return {} if linreg is None else {"obs": linreg}


def log_likelihood_group(r: JobResults) -> xr.Dataset | None:
    """The `log_likelihood` group, (chain, draw, *data dims) per observed site; None when the
    job has none. Draw coordinates are the draws' positions within their chain, so a thinned
    log-likelihood still lines up with the posterior's draws."""
    import xarray as xr

    values = pointwise(r)
    if not values:
        return None
    first = next(iter(values.values()))
    chains = r.chains if len(first) % r.chains == 0 else 1
    per_chain = len(first) // chains
    if r.log_lik_draws is not None and len(r.log_lik_draws) == len(first):
        draw_coord = np.asarray(r.log_lik_draws[:per_chain])  # chain 0's: within the chain
    else:
        draw_coord = np.arange(per_chain)
    plates = plate_dims(r)
    coords: dict[str, Any] = {"chain": np.arange(chains), "draw": draw_coord}
    data_vars = {}
    for site, v in values.items():
        if site == "obs" and r.rows is not None and r.log_lik == {}:  # the regression's rows
            extra: tuple[str, ...] = ("row",)
            coords["row"] = np.asarray(r.rows)
        else:
            extra = axis_names(site, v.ndim - 1, plates.get(site), values)
        data_vars[site] = (("chain", "draw", *extra), v.reshape(chains, per_chain, *v.shape[1:]))
    return xr.Dataset(data_vars, coords=coords)


def posterior_stand_in(group: xr.Dataset) -> xr.Dataset:
    """The posterior group of a job that stores no posterior draws but a log-likelihood (a
    bnn-classifier: its networks' weights are too many to keep): `log_likelihood_sum`,
    log p(every item | draw) per draw. ArviZ's loo reads the chain count from the posterior."""
    import xarray as xr

    total = sum(
        v.sum(dim=[d for d in v.dims if d not in ("chain", "draw")]) for v in group.values()
    )
    return xr.Dataset({"log_likelihood_sum": total}, coords={"chain": group["chain"],
                                                             "draw": group["draw"]})  # fmt: skip


def observed_dims(r: JobResults) -> dict[str, tuple[str, ...]]:
    """Dim names of each observed site's values, from the model's plates."""
    plates = plate_dims(r)
    return {s: axis_names(s, v.ndim, plates.get(s), r.observed) for s, v in r.observed.items()}


def linreg_log_likelihood(r: JobResults) -> np.ndarray | None:
    """The built-in regression's pointwise log likelihood, log Normal(y | mean, sigma), per draw
    and data row, (draws, rows): from the stored `mean` draws of a predict job (its fit's
    rows, or new rows that carry the response: their log predictive density), or the
    coefficients' draws times the design matrix of a fit. None where it does not apply (a
    row without y, another model)."""
    if r.fit_spec.get("model") != "linreg" or r.X is None or r.y is None:
        return None
    y = np.asarray(r.y, dtype=np.float64)
    if not np.isfinite(y).all() or "sigma" not in r.posterior:
        return None
    sigma = np.asarray(r.posterior["sigma"], dtype=np.float64).reshape(-1)
    if "mean" in r.row_sites:
        mean = np.asarray(r.row_sites["mean"], dtype=np.float64)
    elif r.terms and all(t in r.posterior for t in r.terms):
        beta = np.stack([np.asarray(r.posterior[t], dtype=np.float64).reshape(-1)
                         for t in r.terms], axis=-1)  # fmt: skip
        mean = beta @ np.asarray(r.X, dtype=np.float64).T
    else:
        return None
    if mean.shape != (len(sigma), len(y)):
        return None
    z = (y - mean) / sigma[:, None]
    out: np.ndarray = -0.5 * z**2 - np.log(sigma[:, None]) - 0.5 * np.log(2 * np.pi)
    return out


def stored_log_lik(
    draws: Mapping[str, np.ndarray], kinds: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """({observed site: log-likelihood}, draw positions used) from a job's stored rows."""
    values = {
        s.removeprefix(LOGLIK_PREFIX): d
        for s, d in draws.items()
        if kinds.get(s) == "log_likelihood" and s.startswith(LOGLIK_PREFIX)
    }
    positions = draws.get(DRAWS_SITE)
    return values, None if positions is None else np.asarray(positions[0])


def stored_observed(draws: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> dict[str, Any]:
    """{observed site: its values} from a job's `observed:SITE` rows (kind `data`)."""
    return {
        s.removeprefix(OBSERVED_PREFIX): d[0]
        for s, d in draws.items()
        if kinds.get(s) == "data" and s.startswith(OBSERVED_PREFIX)
    }


def is_loglik_row(site: str) -> bool:
    """A row the log-likelihood group reads (not a library model's own data site)."""
    return site == DRAWS_SITE or site.startswith((OBSERVED_PREFIX, LOGLIK_PREFIX))
