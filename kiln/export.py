"""Stored results of a job, gathered in one place, and their exports: ArviZ, CSV, JSON.

Reads through db (no torch): a fit's posterior draws and losses, a predict job's draws of every
site and the rows it predicted for. Used by `jobs samples/export/plot` and by kiln.Client.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import SpecError
from kiln.export_json import as_json
from kiln.export_loglik import (  # noqa: F401  (linreg_log_likelihood: kept importable here)
    axis_names,
    is_loglik_row,
    linreg_log_likelihood,
    log_likelihood_group,
    observed_dims,
    plate_dims,
    posterior_stand_in,
    stored_log_lik,
    stored_observed,
)
from kiln.export_warmup import warmup_groups
from kiln.records import STATS

if TYPE_CHECKING:
    import arviz
    from sqlalchemy.orm import Session

EXPORT_FORMATS = ("netcdf", "csv", "json")
DATA_SITES = ("__X__", "__y__", "__row__")
OBSERVED_PREFIX = "observed:"  # a user predict job's data site: the observed values of a site
# Kiln's per-draw MCMC statistics under ArviZ's names for them.
ARVIZ_STATS = {"accept_prob": "acceptance_rate"}


@dataclass
class JobResults:
    """What a fit or predict job stored, in numpy form."""

    job_id: str
    kind: str
    status: str
    fit_id: str
    fit_spec: dict[str, Any]
    info: dict[str, Any]
    losses: list[tuple[int, float]]
    posterior: dict[str, np.ndarray]  # latent site -> (num_samples, *shape)
    row_sites: dict[str, np.ndarray] = field(default_factory=dict)  # mean, obs: (S, rows)
    kinds: dict[str, str] = field(default_factory=dict)  # site -> stored kind
    X: np.ndarray | None = None  # (rows, terms)
    y: np.ndarray | None = None  # (rows,), NaN where unknown
    rows: np.ndarray | None = None  # positions in the data table
    terms: tuple[str, ...] = ()
    response: str = "y"
    new_data: bool = False
    chains: int = 1  # MCMC: draws are chain-major, (chains * draws, *shape)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)  # MCMC, per draw
    user_data: dict[str, Any] = field(default_factory=dict)  # a user model's data, as given
    # Library models: sites stored per item (class_probs, forecast...) and their data sites.
    item_sites: dict[str, np.ndarray] = field(default_factory=dict)
    data_sites: dict[str, np.ndarray] = field(default_factory=dict)
    # A user model's fit or predict job: the values its data gave each observed site.
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    # A user model's fit: pointwise log-likelihood by observed site, (draws used, *data shape),
    # and the positions of those draws among the chain-major draws (None: all of them).
    log_lik: dict[str, np.ndarray] = field(default_factory=dict)
    log_lik_draws: np.ndarray | None = None
    # The job's name and tags ({"name": str | None, "tags": {key: value}}), for the attributes.
    labels: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, np.ndarray] = field(default_factory=dict)  # asked for: kiln.warmup

    @property
    def num_samples(self) -> int:
        """Draws per chain."""
        first = next(iter(self.posterior.values()), None)
        return 0 if first is None else len(first) // self.chains


def load_results(session: Session, job_id: str) -> JobResults:
    """Gather a job's stored results, with its name and tags. Raises SpecError (exit 2) for a
    job without results."""
    from db.labels import tags_of
    from db.models import Job

    results = _gather(session, job_id)
    job = session.get_one(Job, results.job_id)
    results.labels = {"name": job.name, "tags": tags_of(session, [job.id]).get(job.id, {})}
    return results


def _gather(session: Session, job_id: str) -> JobResults:
    from db.datasets import load_dataset
    from db.jobs import get_job
    from db.results import get_draws, get_losses, get_sample_summaries
    from kiln.tables import build_design, read_csv_bytes

    job = get_job(session, job_id)
    if job.status != "succeeded":
        raise SpecError(f"job {job.id} is {job.status}; it has no results to read (yet)")
    fit = get_job(session, job.spec["from_job"]) if job.kind == "predict" else job
    kinds = {s.site: s.kind for s in get_sample_summaries(session, job.id)}
    draws = get_draws(session, job.id, kind=None)
    fit_kind = str(fit.spec.get("kind"))
    log_lik, log_lik_draws = stored_log_lik(draws, kinds)
    if fit_kind == "library_fit":
        return JobResults(
            job_id=job.id, kind=job.kind, status=job.status, fit_id=fit.id,
            fit_spec=dict(fit.spec), info=dict(job.info or {}),
            losses=get_losses(session, fit.id),
            posterior={s: d for s, d in draws.items() if kinds.get(s) == "posterior"},
            kinds=kinds,
            item_sites={
                s: d for s, d in draws.items() if kinds.get(s) in ("deterministic", "predictive")
            },
            data_sites={s: d for s, d in draws.items()
                        if kinds.get(s) == "data" and not is_loglik_row(s)},
            observed=stored_observed(draws, kinds), log_lik=log_lik, log_lik_draws=log_lik_draws,
        )  # fmt: skip
    if fit_kind in ("user_svi_fit", "user_mcmc_fit"):
        from kiln.userdata import parse_user_data

        dataset_id = job.dataset_id or fit.dataset_id  # a predict job's new data, if any
        dataset = load_dataset(session, dataset_id) if dataset_id else None
        return JobResults(
            job_id=job.id, kind=job.kind, status=job.status, fit_id=fit.id,
            fit_spec=dict(fit.spec), info=dict(job.info or {}),
            losses=get_losses(session, fit.id),
            posterior={
                s: d for s, d in draws.items() if kinds.get(s) in ("posterior", "deterministic")
            },
            kinds=kinds, chains=int((job.info or {}).get("chains") or 1),
            sample_stats={s: d for s, d in draws.items() if kinds.get(s) == "sample_stats"},
            user_data=parse_user_data(dataset.content, dataset.name)[1] if dataset else {},
            item_sites={s: d for s, d in draws.items() if kinds.get(s) == "predictive"},
            observed=stored_observed(draws, kinds),
            new_data=job.kind == "predict" and job.dataset_id is not None,
            log_lik=log_lik, log_lik_draws=log_lik_draws,
        )  # fmt: skip
    results = JobResults(
        job_id=job.id, kind=job.kind, status=job.status, fit_id=fit.id,
        fit_spec=dict(fit.spec), info=dict(job.info or {}), losses=get_losses(session, fit.id),
        posterior={s: d for s, d in draws.items() if kinds.get(s) == "posterior"},
        row_sites={
            s: d for s, d in draws.items() if kinds.get(s) in ("deterministic", "predictive")
        },
        kinds=kinds,
    )  # fmt: skip
    if job.kind == "predict":
        results.X, results.y, results.rows = (draws[s][0] for s in DATA_SITES)
        results.terms = tuple(results.info.get("terms", ()))
        results.response = str(results.info.get("response", "y"))
        results.new_data = job.dataset_id is not None
    elif fit.dataset_id:
        design = build_design(
            read_csv_bytes(load_dataset(session, fit.dataset_id).content), fit.spec["formula"]
        )
        results.X, results.y, results.rows = design.X, design.y, design.row_index
        results.terms, results.response = design.terms, design.response
    return results


def import_arviz_quietly() -> None:
    """Import arviz without its import-time notice about a coming refactor (once per process:
    a later `import arviz` finds it in sys.modules)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz  # noqa: F401


def to_inference_data(r: JobResults) -> arviz.InferenceData:
    """ArviZ InferenceData: posterior (chain 0), posterior_predictive or predictions (obs and
    the regression `mean`, by data row), observed_data, constant_data (the design matrix), and
    a `loss` group (the fit's loss by step)."""
    from importlib.metadata import version  # Pyro's, without importing it (and torch)

    import xarray as xr

    import_arviz_quietly()
    import arviz as az

    draws = np.arange(r.num_samples)
    chains = np.arange(r.chains)

    def by_draw(values: np.ndarray, extra: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
        dims = ("chain", "draw", *extra)
        values = np.asarray(values)
        return dims, values.reshape(r.chains, len(values) // r.chains, *values.shape[1:])

    # Dims named after a user model's plates; never after a variable of the same group
    # (xarray would take it for a coordinate).
    plates = plate_dims(r)
    posterior_vars = {}
    for site, values in r.posterior.items():
        posterior_vars[site] = by_draw(
            values, axis_names(site, values.ndim - 1, plates.get(site), r.posterior)
        )
    groups: dict[str, Any] = {
        "posterior": xr.Dataset(posterior_vars, coords={"chain": chains, "draw": draws})
    }
    if r.sample_stats:
        groups["sample_stats"] = xr.Dataset(
            {ARVIZ_STATS.get(name, name): by_draw(values, ())
             for name, values in r.sample_stats.items()},
            coords={"chain": chains, "draw": draws},
        )  # fmt: skip
    if r.user_data:
        constant_vars = {}
        for name, value in r.user_data.items():
            array = np.asarray(value)
            constant_vars[name] = (tuple(f"{name}_dim_{i}" for i in range(array.ndim)), array)
        groups["constant_data"] = xr.Dataset(constant_vars)
    if r.item_sites:  # library predictions: draws, and per-item summaries (first axis 1)
        drawn = {k: v for k, v in r.item_sites.items() if v.shape[0] > 1}
        summaries = {k: v[0] for k, v in r.item_sites.items() if v.shape[0] == 1}
        if drawn:
            groups["predictions" if r.new_data else "posterior_predictive"] = xr.Dataset({
                site: (("chain", "draw", *(f"{site}_dim_{i}" for i in range(v.ndim - 1))),
                       v[None, ...])
                for site, v in drawn.items()
            })  # fmt: skip
        if summaries:
            groups["predictive_summary"] = xr.Dataset({
                site: (tuple(f"{site}_dim_{i}" for i in range(v.ndim)), v)
                for site, v in summaries.items()
            })  # fmt: skip
    if r.observed:
        named = observed_dims(r)
        groups["observed_data"] = xr.Dataset(
            {site: (named[site], v) for site, v in r.observed.items()}
        )
    if r.data_sites:
        groups["constant_data"] = xr.Dataset(
            {site.strip("_"): (tuple(f"{site.strip('_')}_dim_{i}" for i in range(v.ndim - 1)),
                               v[0]) for site, v in r.data_sites.items()}
        )  # fmt: skip
    rows = np.asarray(r.rows) if r.rows is not None else None
    if r.row_sites and rows is not None:
        name = "predictions" if r.new_data else "posterior_predictive"
        groups[name] = xr.Dataset(
            {site: by_draw(values, ("row",)) for site, values in r.row_sites.items()},
            coords={"chain": chains, "draw": draws, "row": rows},
        )
    if r.X is not None and rows is not None:
        constant = xr.Dataset(
            {"X": (("row", "term"), r.X)}, coords={"row": rows, "term": list(r.terms)}
        )
        known = r.y is not None and bool(np.isfinite(r.y).all())
        if r.new_data:
            if r.y is not None and np.isfinite(r.y).any():
                constant["y_observed"] = ("row", r.y)
            groups["predictions_constant_data"] = constant
        else:
            groups["constant_data"] = constant
            if known:
                groups["observed_data"] = xr.Dataset({"obs": ("row", r.y)}, coords={"row": rows})
    groups.update(warmup_groups(r))
    log_lik = log_likelihood_group(r)
    if log_lik is not None:  # what az.loo and az.waic read
        groups["log_likelihood"] = log_lik
        if not posterior_vars:  # a bnn-classifier stores no weights; az.loo wants a posterior
            groups["posterior"] = posterior_stand_in(log_lik)
    if r.losses and not r.sample_stats:
        loss_steps, loss_values = zip(*r.losses, strict=True)
        groups["loss"] = xr.Dataset(
            {"loss": ("step", np.asarray(loss_values))}, coords={"step": np.asarray(loss_steps)}
        )
    attrs = {
        "kiln_job_id": r.job_id,
        "kiln_fit_id": r.fit_id,
        "kiln_job_kind": r.kind,
        "model": str(r.fit_spec.get("model")),
        "method": str(r.fit_spec.get("method", "svi")),
        "response": r.response,
        "kiln_job_name": str(r.labels.get("name") or ""),
        "kiln_tags": json.dumps(r.labels.get("tags") or {}, sort_keys=True),
        "inference_library": "pyro",
        "inference_library_version": version("pyro-ppl"),
    }
    if r.fit_spec.get("formula"):  # the built-in regression's; a user model has none
        attrs["formula"] = str(r.fit_spec["formula"])
    attrs.update(method_attrs(r.fit_spec))
    for group in groups.values():
        group.attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # `loss` is not one of ArviZ's own groups
        return az.InferenceData(**groups)


def method_attrs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The fit's settings that apply to its method: SVI's guide, steps and lr; MCMC's chains,
    warmup and samples (an MCMC fit has no guide)."""
    if str(spec.get("method", "svi")) == "svi":
        keys = ("guide", "steps", "lr", "num_samples")
        out = {k: spec[k] for k in keys if spec.get(k) is not None}
        out["guide"] = str(spec.get("guide_function") or spec.get("guide"))
        return out
    return {k: spec[k] for k in ("chains", "warmup", "samples") if spec.get(k) is not None}


def flat_columns(site: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """{column name: values by draw}: `site` for a scalar site, `site[i,j]` for each element."""
    values = np.asarray(values)
    if values.ndim == 1:
        return {site: values}
    flat = values.reshape(len(values), -1)
    names = [",".join(map(str, ix)) for ix in np.ndindex(*values.shape[1:])]
    return {f"{site}[{n}]": flat[:, i] for i, n in enumerate(names)}


def draws_table(sites: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Wide table of draws: column `draw`, then one column per site element."""
    columns: dict[str, np.ndarray] = {}
    for site, values in sites.items():
        columns.update(flat_columns(site, values))
    length = len(next(iter(columns.values()))) if columns else 0
    matrix = (
        np.column_stack([np.arange(length), *columns.values()]) if columns else np.empty((0, 1))
    )
    return ["draw", *columns], matrix


def summary_rows(
    site: str, kind: str, stats: np.ndarray, shape: tuple[int, ...]
) -> list[list[Any]]:
    """Rows of (site[index], kind, mean, sd, q05, q50, q95) for one site's (5, *shape) stats."""
    if not shape:
        return [[site, kind, *(float(stats[i]) for i in range(len(STATS)))]]
    out = []
    for index in np.ndindex(*shape):
        name = f"{site}[{','.join(map(str, index))}]"
        out.append([name, kind, *(float(stats[(i, *index)]) for i in range(len(STATS)))])
    return out


def write_export(r: JobResults, fmt: str, path: str | Path) -> Path:
    """Write `r` as netcdf (ArviZ), csv (one row per draw) or json (summaries and draws)."""
    path = Path(path)
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"--format: must be one of {', '.join(EXPORT_FORMATS)} (got {fmt!r})")
    if path.is_dir():
        raise SpecError(f"-o {path}: is a directory; give a file name")
    if not path.parent.exists():
        raise SpecError(f"-o {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "netcdf":
            to_inference_data(r).to_netcdf(str(tmp), engine="h5netcdf")
        elif fmt == "csv":
            columns, matrix = draws_table({**r.posterior, **r.row_sites, **r.sample_stats})
            if r.chains > 1:  # chain-major: `chain`, then `draw` within the chain
                per_chain = len(matrix) // r.chains
                matrix[:, 0] = np.tile(np.arange(per_chain), r.chains)
                matrix = np.column_stack([np.repeat(np.arange(r.chains), per_chain), matrix])
                columns = ["chain", *columns]
            header = ",".join(f'"{c}"' if "," in c else c for c in columns)
            np.savetxt(tmp, matrix, delimiter=",", header=header, comments="", fmt="%.9g")
        else:
            tmp.write_text(json.dumps(as_json(r), allow_nan=False))
        tmp.replace(path)  # never a half-written export under the asked-for name
    finally:
        tmp.unlink(missing_ok=True)
    return path
