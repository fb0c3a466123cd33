"""Warmup draws of an MCMC fit (`jobs submit fit --method nuts --keep-warmup`), read back on
request (`jobs export --warmup`) as ArviZ's `warmup_posterior` group, and the one place that
reads a job's results with the options `jobs export` takes (row labels, warmup), for the
Reader and the HTTP API alike.

A fit that kept them stores each site's warmup draws as a Sample row of kind `warmup` named
`warmup:SITE`, chain-major like its posterior draws: (chains * warmup, *shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.errors import SpecError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kiln.export import JobResults

WARMUP_KIND = "warmup"
WARMUP_PREFIX = "warmup:"


def read_results(
    session: Session, job_id: str, id_column: str | None = None, warmup: bool = False
) -> JobResults:
    """A succeeded job's results (kiln.export.load_results): with `id_column`, its rows
    labelled (kiln.rowlabels); with `warmup`, its warmup draws too (add_warmup)."""
    from kiln.export import load_results

    results = load_results(session, job_id)
    if id_column is not None:
        from kiln.rowlabels import label_rows

        results = label_rows(session, results, id_column)
    if warmup:
        results = add_warmup(session, results)
    return results


def add_warmup(session: Session, results: JobResults) -> JobResults:
    """`results` with the job's warmup draws. Raises SpecError for a job that did not keep
    them, saying how to get them."""
    import dataclasses

    from db.results import get_draws

    draws = get_draws(session, results.job_id, kind=WARMUP_KIND)
    if not draws:
        method = str(results.fit_spec.get("method", "svi"))
        what = "an MCMC fit" if results.kind == "fit" and method != "svi" else "not an MCMC fit"
        raise SpecError(
            f"--warmup: job {results.job_id} kept no warmup draws ({what}); resubmit the fit"
            " with `--method nuts --keep-warmup` (or hmc) to keep them",
            "warmup",
        )
    found = {site.removeprefix(WARMUP_PREFIX): values for site, values in draws.items()}
    return dataclasses.replace(results, warmup=found)


def check_warmup_format(fmt: str, warmup: bool) -> None:
    """Only the netCDF export has groups to put warmup draws in."""
    if warmup and fmt != "netcdf":
        raise SpecError(
            f"--warmup: a {fmt} export has no warmup group; export netcdf (-o FILE.nc) instead",
            "warmup",
        )
