"""kiln.Client: Kiln from Python (notebooks, scripts), on the same database and broker as `jobs`.

from kiln import Client

with Client() as kiln:                      # KILN_* settings, or database_url=/broker_url=
    fit = kiln.submit_fit("rugged_data.csv", "log(rgdppc_2000) ~ cont_africa * rugged")
    pred = kiln.predict(fit, num_samples=800)  # waits for the fit on the worker side
    kiln.wait(pred)
    kiln.params(fit)                       # DataFrame: mean, sd, q05, q50, q95 by site
    kiln.samples(pred, site="obs")         # DataFrame of per-row summaries
    idata = kiln.inference_data(pred)      # arviz.InferenceData
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kiln.errors import InfraError
from kiln.reader import ENDED, Reader
from kiln.records import DIAGNOSTICS, STATS
from kiln.settings import Settings
from kiln.submitter import Submitter

if TYPE_CHECKING:
    import arviz
    import numpy as np
    import pandas as pd


class Client(Submitter, Reader):
    """Submit jobs, wait for them, and read their results as pandas and ArviZ objects (or as
    plain values: kiln.reader.Reader, which `jobs` prints).

    With KILN_API_URL (and KILN_TOKEN) set, `Client()` is a kiln.remote.RemoteClient: the
    same methods, through the HTTP API, with no database or broker URL.

    Nothing runs here: jobs run on `jobs worker` processes. Errors are Kiln's own
    (kiln.errors: SpecError/DataError for bad input, NotFound, InfraError).
    """

    # The Client over the HTTP API: kiln.remote sets it to its RemoteClient when imported
    # (`from kiln import Client` imports it), so this module need not import that one.
    over_api: ClassVar[type[Client] | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Client:
        """A RemoteClient (the HTTP API) when KILN_API_URL is set and neither a database nor
        a broker URL is given; else a Client on the database and broker."""
        remote = Client.over_api
        direct = args or kwargs.get("database_url") or kwargs.get("broker_url")
        if cls is Client and remote is not None and not direct:
            if Settings(**{k: v for k, v in kwargs.items() if v is not None}).api_url:
                return object.__new__(remote)
        return object.__new__(cls)

    def __init__(
        self,
        database_url: str | None = None,
        broker_url: str | None = None,
        home: str | Path | None = None,
        **settings: Any,
    ) -> None:
        # Pydantic validates each value against its field (a str home becomes a Path).
        given: dict[str, Any] = {
            "database_url": database_url,
            "broker_url": broker_url,
            "home": home,
        }
        self.settings = Settings(**{k: v for k, v in given.items() if v is not None}, **settings)
        self._engine: Any = None
        self._sessions: Any = None
        self._celery: Any = None
        self._make_celery: Callable[[], Any] | None = None

    @classmethod
    def over(cls, settings: Settings, sessions: Any, celery: Callable[[], Any]) -> Client:
        """A Client on an open database and a broker app made on first send (the CLI's)."""
        client = object.__new__(cls)  # not Client.__new__: this one is on the database
        client.settings = settings
        client._engine, client._sessions, client._celery = None, sessions, None
        client._make_celery = celery
        return client

    # -- plumbing ---------------------------------------------------------------------------

    def _sessionmaker(self) -> Any:
        if self._sessions is None:
            from kiln.connect import open_database

            self._engine, self._sessions = open_database(self.settings)
        return self._sessions

    def _session(self) -> Any:
        return self._sessionmaker()()

    def _send(self, job_id: str, queue: str, priority: int) -> None:
        from worker.app import Sender, make_app

        if self._celery is None:
            self._celery = self._make_celery() if self._make_celery else make_app(self.settings)
        Sender(self._celery)(job_id, queue, priority)

    def close(self) -> None:
        """Release database connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._sessions = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- acting on jobs ---------------------------------------------------------------------

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns its status after the request."""
        from db.jobs import request_cancel

        with self._session() as session:
            return request_cancel(session, job_id)

    def cancel_sweep(self, sweep_id: str) -> int:
        """Cancel every member of a sweep not yet ended (queued ones at once, running ones at a
        step); returns how many running jobs were asked to stop."""
        from db.sweeps import cancel_sweep

        with self._session() as session:
            return cancel_sweep(session, sweep_id)

    # -- reading, as pandas and ArviZ (kiln.reader has the plain values) --------------------

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as a dict (the same document as `jobs show --json`)."""
        from kiln.render import job_to_dict

        job = self.job_record(job_id)
        return job_to_dict(job, self.attempts(job.id))

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job has ended; returns it. Raises InfraError after `timeout` s."""
        started = time.monotonic()
        while True:
            job = self.job(job_id)
            if job["status"] in ENDED:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise InfraError(f"job {job['id']} still {job['status']} after {timeout:g} s")
            time.sleep(self.settings.poll_interval_s)

    def jobs(self, status: str | None = None, limit: int = 20) -> pd.DataFrame:
        """Recent jobs, newest first."""
        import pandas as pd

        from kiln.render import job_to_dict

        rows = [job_to_dict(j) for j in self.job_records(status, limit)]
        columns = ["id", "kind", "status", "model", "queue", "last_loss", "created_at", "error"]
        return pd.DataFrame([{k: r[k] for k in columns} for r in rows], columns=columns)

    def search(
        self,
        where: str | None = None,
        order_by: str | None = None,
        columns: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> pd.DataFrame:
        """The jobs a query finds (`status = 'succeeded' AND params.rugged.mean < 0`; see
        kiln.query), sorted by `order_by` then newest first, one page: a row per job, a column
        per field in `columns` (default: id, name, kind, status, model, final_loss, created).
        Raises SpecError for a query that does not parse."""
        import pandas as pd

        shown = columns or "id,name,kind,status,model,final_loss,created"
        found = self.search_records(where, order_by, shown, limit, offset)
        names = [c.strip() for c in shown.split(",")]
        return pd.DataFrame([[values[n] for n in names] for _, values in found], columns=names)

    def losses(self, job_id: str) -> pd.DataFrame:
        """One row per step: step, loss."""
        import pandas as pd

        return pd.DataFrame(self.loss_rows(job_id), columns=["step", "loss"])

    def metrics(self, job_id: str, name: str | None = None) -> pd.DataFrame:
        """One row per metric and step: name, step, epoch, value (a predict job's at step 0)."""
        import pandas as pd

        rows = self.metric_rows(job_id, name)
        return pd.DataFrame(rows, columns=["name", "step", "epoch", "value"])

    def sweep_summary(self, sweep_id: str, by: Sequence[str]) -> pd.DataFrame:
        """The sweep's members grouped by the settings `by` (e.g. ["lr", "guide"]), one row
        per group: the `by` values, members, succeeded, and `final_loss.mean`,
        `final_loss.sd`, `SITE.mean`, `SITE.sd` across the group's succeeded members (as
        `jobs sweep show --by`). A new sweep is `submit_sweep(...)`."""
        import pandas as pd

        groups = self.sweep_groups(sweep_id, list(by))
        return pd.DataFrame(groups.rows, columns=groups.columns)

    def params(self, job_id: str) -> pd.DataFrame:
        """Posterior summary of each latent site, indexed by site (elements as `site[i]`)."""
        import numpy as np
        import pandas as pd

        from kiln.export import summary_rows

        rows = []
        for s in self.posterior_stats(job_id):
            stats = np.stack([np.asarray(getattr(s, k)) for k in STATS])
            rows.extend(summary_rows(s.site, "posterior", stats, s.shape))
        frame = pd.DataFrame(rows, columns=["site", "kind", *STATS]).drop(columns="kind")
        return frame.set_index("site")

    def diagnostics(self, job_id: str) -> pd.DataFrame:
        """An MCMC job's per-site r_hat, ess_bulk and ess_tail (one row per site element)."""
        import numpy as np
        import pandas as pd

        rows = []
        for site, values in self.site_diagnostics(job_id).items():
            shape = values.shape[1:]
            for index in np.ndindex(*shape) if shape else [()]:
                name = f"{site}[{','.join(map(str, index))}]" if shape else site
                row = {k: float(values[(i, *index)]) for i, k in enumerate(DIAGNOSTICS)}
                rows.append({"site": name, **row})
        return pd.DataFrame(rows)

    def samples(
        self, job_id: str, site: str | None = None, raw: bool = False
    ) -> pd.DataFrame | dict[str, np.ndarray] | np.ndarray:
        """Summaries by site element (a DataFrame), or with raw=True the draws themselves:
        one site's array (num_samples, *shape), or a dict of every site's."""
        import pandas as pd

        from kiln.export import DATA_SITES, OBSERVED_PREFIX, summary_rows

        job = self.job_record(job_id)
        if raw:
            draws = self.draws(job.id, sites=[site] if site else None)
            draws = {
                k: v for k, v in draws.items()
                if k not in DATA_SITES and not k.startswith(OBSERVED_PREFIX)
            }  # fmt: skip
            if site is not None and site not in draws:
                raise self._no_site(job.id, site)
            return draws[site] if site is not None else draws
        rows = []
        for s in self.sample_summaries(job.id, site):
            if s.stats is not None:
                rows.extend(summary_rows(s.site, s.kind, s.stats, s.shape))
        if site is not None and not rows:
            raise self._no_site(job.id, site)
        return pd.DataFrame(rows, columns=["site", "kind", *STATS]).set_index("site")

    def _no_site(self, job_id: str, site: str) -> KeyError:
        """The KeyError for a site the job did not store, naming the close ones."""
        from kiln.export import DATA_SITES
        from kiln.specerrors import did_you_mean

        names = [s.site for s in self.sample_summaries(job_id) if s.site not in DATA_SITES]
        return KeyError(f"job {job_id} has no site `{site[:100]}`{did_you_mean(site, names)}"
                        f" (sites: {', '.join(names[:30])})")  # fmt: skip

    def inference_data(self, job_id: str, id_column: str | None = None,
                       warmup: bool = False) -> arviz.InferenceData:  # fmt: skip
        """The job's results as ArviZ InferenceData (as `jobs export --format netcdf` writes);
        with `id_column` (e.g. "isocode"), the `row` coordinate holds that column's values;
        with `warmup`, a `warmup_posterior` group (of a fit submitted with keep_warmup)."""
        from kiln.export import to_inference_data

        return to_inference_data(self.results(job_id, id_column=id_column, warmup=warmup))

    def compare(self, job_ids: Sequence[str], ic: str = "loo") -> pd.DataFrame:
        """Rank fits by PSIS-LOO (or WAIC, `ic="waic"`) from their stored pointwise
        log-likelihood, as arviz.compare does: by job id, best first, with rank, elpd, se, p,
        d (the difference to the best), dse, weight, warning and pareto_k_bad (points with
        k > 0.7). Raises SpecError for a job without a log-likelihood or with other data."""
        from kiln.compare import check_ids, compare_results

        ids = check_ids(job_ids, ic)
        return compare_results([self.results(job_id) for job_id in ids], ic)

    def export(self, job_id: str, path: str | Path, fmt: str = "netcdf",
               id_column: str | None = None, warmup: bool = False) -> Path:  # fmt: skip
        """Write the job's results to `path` (netcdf, csv or json); `id_column` and `warmup`
        (netcdf only) as for inference_data."""
        from kiln.export import write_export
        from kiln.warmup import check_warmup_format

        check_warmup_format(fmt, warmup)
        return write_export(self.results(job_id, id_column=id_column, warmup=warmup), fmt, path)
