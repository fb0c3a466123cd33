"""Routes that read a job's results: metrics, diagnostics, samples and draws, the results bundle,
exports and figures. Each resolves the job among those the caller may see (else 404)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from kiln.errors import NotFound
from kiln.rowlabels import MAX_COLUMN
from kiln.server.auth import Caller, Identity
from kiln.server.jobs import visible_job
from kiln.server.problems import PROBLEM_RESPONSES
from kiln.server.state import ServerState, state_of

if TYPE_CHECKING:
    from kiln.export import JobResults
    from kiln.reader import JobRecord

router = APIRouter(responses=PROBLEM_RESPONSES, tags=["results"])
EXPORTS = {"netcdf": ("nc", "application/x-netcdf"), "csv": ("csv", "text/csv"),
           "json": ("json", "application/json")}  # fmt: skip
# `jobs export --id-column COL`: the server reads the job's data set and labels its rows.
IdColumn = Annotated[str | None, Query(min_length=1, max_length=MAX_COLUMN,
                                       description="Label data rows by this column")]  # fmt: skip
# `jobs export --warmup`: an MCMC fit's warmup draws (kept with keep_warmup), else 422.
Warmup = Annotated[bool, Query(description="Add the warmup draws (warmup_posterior)")]
# pyplot keeps one current figure per process: one figure at a time.
_drawing = threading.Lock()


class VisibleResults:
    """The reads kiln.figures.draw needs, limited to the jobs `identity` may see."""

    def __init__(self, state: ServerState, identity: Identity) -> None:
        self.state, self.identity = state, identity

    def results(self, job_id: str, id_column: str | None = None,
                warmup: bool = False) -> JobResults:  # fmt: skip
        from kiln.warmup import read_results

        with self.state.sessions() as session:
            job = visible_job(session, self.identity, job_id)
            return read_results(session, job.id, id_column, warmup)

    def latest_prediction(self, fit_id: str) -> str | None:
        """The fit's latest prediction of its own rows, if the caller may see it too."""
        from db.jobs import latest_prediction

        with self.state.sessions() as session:
            fit = visible_job(session, self.identity, fit_id)
            return latest_prediction(session, fit.id, self.identity.owner_filter)

    def job_record(self, job_id: str) -> JobRecord:
        from kiln.reader import job_record

        with self.state.sessions() as session:
            return job_record(visible_job(session, self.identity, job_id))

    def loss_rows(self, job_id: str) -> list[tuple[int, float]]:
        from db.losses import get_loss_page

        with self.state.sessions() as session:
            return get_loss_page(session, visible_job(session, self.identity, job_id).id)

    def metric_rows(
        self, job_id: str, name: str | None = None
    ) -> list[tuple[str, int, int, float]]:
        from db.results import get_metrics

        with self.state.sessions() as session:
            return get_metrics(session, visible_job(session, self.identity, job_id).id, name)


@router.get("/compare", summary="Rank fits by PSIS-LOO or WAIC")
def compare(request: Request, identity: Caller, ids: Annotated[list[str], Query()],
            ic: Literal["loo", "waic"] = "loo") -> dict[str, Any]:  # fmt: skip
    """What `jobs compare ID ID...` prints: `jobs`, one entry per job, best first, with `id`,
    rank, elpd_loo (elpd_waic), se, p_loo, d_loo, dse, weight, warning, pareto_k_bad.
    Only jobs the caller may see (else 404); 422 for a job without a log-likelihood."""
    from kiln.compare import check_ids, compare_results, to_json

    reader = VisibleResults(state_of(request), identity)
    chosen = check_ids(ids, ic)
    return {"ic": ic, "jobs": to_json(compare_results([reader.results(i) for i in chosen], ic))}


@router.get("/jobs/{job_id}/metrics", summary="A job's metrics by step and epoch")
def metrics(request: Request, identity: Caller, job_id: str,
            name: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Rows `[name, step, epoch, value]` by step, then name (of one metric, with `name`)."""
    rows = VisibleResults(state_of(request), identity).metric_rows(job_id, name)
    return {"columns": ["name", "step", "epoch", "value"], "rows": rows}


@router.get("/jobs/{job_id}/diagnostics", summary="An MCMC job's r_hat, ess_bulk, ess_tail")
def diagnostics(request: Request, identity: Caller, job_id: str) -> dict[str, Any]:
    """Per site: shape, dtype and `values` (r_hat, ess_bulk, ess_tail), each shaped like the
    site, as nested lists (null: not finite). Empty for a job that is not an MCMC fit."""
    from db.results import get_diagnostics

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        found = get_diagnostics(session, job.id)
        return {
            "id": job.id,
            "sites": [{"site": site, "shape": list(values.shape[1:]), "dtype": str(values.dtype),
                       "values": values.tolist()} for site, values in found.items()],
        }  # fmt: skip


@router.get("/jobs/{job_id}/samples", summary="The stored sites of a job, without their draws")
def samples(request: Request, identity: Caller, job_id: str,
            site: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Per site, in storage order: kind, num_samples, shape, dtype and `stats` (mean, sd,
    q05, q50, q95, each shaped like the site; null for data sites)."""
    from db.results import get_sample_summaries

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        found = get_sample_summaries(session, job.id, site)
        return {
            "id": job.id,
            "sites": [{"site": s.site, "kind": s.kind, "num_samples": s.num_samples,
                       "shape": list(s.shape), "dtype": s.dtype,
                       "stats": None if s.stats is None else s.stats.tolist()} for s in found],
        }  # fmt: skip


@router.get(
    "/jobs/{job_id}/samples/{site:path}", summary="The draws of one site (.npy)",
    response_class=Response, responses={200: {"content": {"application/x-npy": {}}}},
)  # fmt: skip
def draws(request: Request, identity: Caller, job_id: str, site: str) -> Response:
    """The site's draws, (num_samples, *shape), as a NumPy .npy file (numpy.load reads it;
    no pickle)."""
    from db.results import get_draws
    from kiln.remote_results import NPY, encode_array

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        found = get_draws(session, job.id, kind=None, sites=[site])
    if site not in found:
        raise NotFound(f"job {job.id} has no site `{site}`")
    return Response(encode_array(found[site]), media_type=NPY)


@router.get("/jobs/{job_id}/latest-prediction", summary="A fit's latest prediction of its rows")
def latest_prediction(request: Request, identity: Caller, job_id: str) -> dict[str, Any]:
    """`{"id": ...}`: the newest succeeded predict job for the fit's own rows, or null."""
    return {"id": VisibleResults(state_of(request), identity).latest_prediction(job_id)}


@router.get(
    "/jobs/{job_id}/results", summary="Everything a succeeded job stored, as one bundle",
    response_class=Response, responses={200: {"content": {"application/x-kiln-results+zip": {}}}},
)  # fmt: skip
def results(request: Request, identity: Caller, job_id: str, id_column: IdColumn = None,
            warmup: Warmup = False) -> Response:  # fmt: skip
    """A zip of .npy members: `meta.npy` (JSON as uint8: the scalar and dict fields, and what
    each other member `a0`, `a1`... holds) and the arrays (kiln.remote_results reads it);
    string row labels (`id_column`) are a JSON field. 422 for a job that has not succeeded,
    a column that cannot label its rows, or warmup draws it did not keep."""
    from kiln.remote_results import BUNDLE, encode_results

    r = VisibleResults(state_of(request), identity).results(job_id, id_column, warmup)
    return Response(encode_results(r), media_type=BUNDLE)


@router.get("/jobs/{job_id}/export", summary="A job's results as a file",
            response_class=FileResponse)  # fmt: skip
def export(request: Request, identity: Caller, job_id: str,
           format: Literal["netcdf", "csv", "json"] = "netcdf", id_column: IdColumn = None,
           warmup: Warmup = False) -> FileResponse:  # fmt: skip
    """What `jobs export` writes: netcdf (ArviZ InferenceData), csv (one row per draw) or json
    (summaries and draws), as an attachment; `id_column` and `warmup` as `jobs export`'s."""
    from kiln.export import write_export
    from kiln.warmup import check_warmup_format

    check_warmup_format(format, warmup)
    r = VisibleResults(state_of(request), identity).results(job_id, id_column, warmup)
    suffix, media_type = EXPORTS[format]
    folder = Path(tempfile.mkdtemp(prefix="kiln-export-"))
    try:
        written = write_export(r, format, folder / f"{r.job_id}.{suffix}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, folder, ignore_errors=True)
    return FileResponse(written, media_type=media_type, filename=written.name, background=cleanup)


@router.get(
    "/jobs/{job_id}/plot", summary="A figure of a job's results (PNG)",
    response_class=Response, responses={200: {"content": {"image/png": {}}}},
)  # fmt: skip
def plot(request: Request, identity: Caller, job_id: str,
         kind: Literal["loss", "params", "predictive", "trace", "metrics"] = "predictive",
         ) -> Response:  # fmt: skip
    """What `jobs plot --kind KIND` draws. A fit's predictive figure is of its latest
    prediction; the `Kiln-Note` header says so."""
    from kiln.figures import draw

    reader = VisibleResults(state_of(request), identity)
    with tempfile.TemporaryDirectory(prefix="kiln-plot-") as folder, _drawing:
        written, notes = draw(reader, job_id, kind, Path(folder) / "figure.png")
        body = written.read_bytes()
    headers = {"Kiln-Note": "; ".join(notes)} if notes else None
    return Response(body, media_type="image/png", headers=headers)
