"""RemoteClient: the Client over the HTTP API (`jobs server`), for KILN_API_URL + KILN_TOKEN.

It builds requests as the Client does (the same checks, locally, first), sends them as the
server's multipart forms, and reads jobs, losses and params back into the same records, so
`jobs` prints the same output. It needs no database or broker URL; what the API does not
serve yet raises a UserError saying so, never a fall back to the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from kiln.client import Client
from kiln.continuation import CONTINUE_FIELDS
from kiln.errors import NotFound, SpecError, UserError
from kiln.labels import Labels, label_fields, labels_of
from kiln.reader import AttemptRecord, JobRecord, LogLine, LogPage, parse_search
from kiln.records import STATS, SiteStats
from kiln.remote_fleet import RemoteFleet, maybe_time
from kiln.remote_results import RemoteResults, array_from_json
from kiln.settings import Settings
from kiln.specs import UserModelRef
from kiln.submitter import Request, Submitted

if TYPE_CHECKING:
    import pandas as pd

    from scheduler.limits import Owner

# The spec fields POST /jobs/fit takes as form fields (tests check the server declares them).
FIT_FIELDS = frozenset({
    "model", "formula", "priors", "guide", "guide_function", "elbo", "optim", "steps", "lr",
    "num_samples", "init", "method", "warmup", "samples", "chains", "target_accept",
    "max_tree_depth", "num_steps", "jit", "seed", "device", "queue", "priority",
    "checkpoint_every", "checkpoint_every_s", "keep_warmup", "chains_per_unit", "until",
    "max_samples", "check_every",
})  # fmt: skip
LIBRARY_FIELDS = frozenset({"model", "options", "data_kind", "optim", "num_samples", "seed",
                            "device", "queue", "priority", "checkpoint_every",
                            "checkpoint_every_s"})  # fmt: skip
PREDICT_FIELDS = frozenset({"num_samples", "seed", "device", "queue", "priority"})
TIMEOUT_S = 60.0
MAX_JSON_BYTES = 256 * 2**20  # a JSON answer larger than this is refused, not read


class RemoteClient(RemoteResults, RemoteFleet, Client):
    """A Client whose every call is a request to the HTTP API."""

    def __init__(self, api_url: str | None = None, token: str | None = None,
                 **settings: Any) -> None:  # fmt: skip
        given: dict[str, Any] = {"api_url": api_url, "token": token, **settings}
        self._setup(Settings(**{k: v for k, v in given.items() if v is not None}))

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteClient:
        """A RemoteClient for settings already read (the CLI's)."""
        client = object.__new__(cls)
        client._setup(settings)
        return client

    def _setup(self, settings: Settings) -> None:
        import httpx

        if not settings.api_url:
            raise SpecError("KILN_API_URL is not set: the HTTP API's address, e.g."
                            " http://127.0.0.1:8321", field="api_url")  # fmt: skip
        self.settings = settings
        self._engine = self._sessions = self._celery = self._make_celery = None
        self._recent: tuple[str, float, dict[str, Any]] | None = None
        token = settings.token.get_secret_value()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=settings.api_url.rstrip("/"), headers=headers,
                                  timeout=TIMEOUT_S, follow_redirects=False)  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteClient:
        return self

    # -- what the API does not serve ---------------------------------------------------------

    def _sessionmaker(self) -> NoReturn:
        raise UserError("this is not available over the HTTP API yet (KILN_API_URL is set);"
                        " unset KILN_API_URL to use the database directly")  # fmt: skip

    def _send(self, job_id: str, queue: str, priority: int) -> NoReturn:
        self._sessionmaker()

    # -- HTTP --------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer (at most MAX_JSON_BYTES), or Kiln's error for a problem answer."""
        return json.loads(self._fetch(path, MAX_JSON_BYTES, method, **kwargs))

    # -- submitting --------------------------------------------------------------------------

    def submit(self, request: Request, then_predict: int | None = None,
               owner: Owner | None = None, labels: Labels | None = None,
               ) -> list[Submitted]:  # fmt: skip
        """Send the request to the server, which checks and stores it as `jobs submit` does
        (and records the token's user as the owner: `owner` is the server's to set)."""
        if owner is not None:
            raise UserError("the server records who submits a job; owner cannot be given")
        spec = request.spec.model_dump(mode="json", exclude_none=True)
        kind, upload = spec.pop("kind"), request.upload
        files: dict[str, tuple[str, bytes]] = {}
        if upload.data is not None:
            files["data"] = (upload.data_name or "data", upload.data)
        if kind in ("predict", "user_predict", "library_predict"):
            path, fields = f"/jobs/{quote(spec.pop('from_job'), safe='')}/predict", spec
            allowed = PREDICT_FIELDS
        elif kind in ("linreg_fit", "user_svi_fit", "user_mcmc_fit"):
            path, fields, allowed = "/jobs/fit", spec, FIT_FIELDS
            if isinstance(request.spec, UserModelRef):  # the file goes as its own upload
                for key in ("model_file", "model_function", "model_source"):
                    fields.pop(key, None)
                fields.setdefault("method", "svi")
                if not fields.get("keep_warmup"):  # the default: older servers take no field
                    fields.pop("keep_warmup", None)
                source = (upload.source or "").encode()
                files["model_file"] = (request.spec.model_file, source)
            if fields.get("priors"):
                fields["priors"] = json.dumps(fields["priors"])
            else:
                fields.pop("priors", None)
        elif kind == "continue_fit":
            path = f"/jobs/{quote(spec.pop('from_job'), safe='')}/continue"
            fields, allowed = spec, frozenset(CONTINUE_FIELDS)
        elif kind == "library_fit":
            path, allowed = "/jobs/fit", LIBRARY_FIELDS
            fields = {k: v for k, v in spec.items() if k not in ("data", "data_kind", "options")}
            fields["options"] = json.dumps(spec.get("options") or {})
            if upload.data is not None:
                fields["data_kind"] = spec["data_kind"]
                files["data"] = (spec["data"], upload.data)
        else:
            raise UserError(f"a {kind} job cannot be submitted over the HTTP API")
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise UserError(f"{', '.join(unknown)}: not accepted by the HTTP API yet")
        if then_predict is not None:
            fields["then_predict"] = then_predict
        form: dict[str, str | list[str]] = {k: str(v) for k, v in fields.items()}
        form.update(label_fields(labels))
        done = self._call("POST", path, data=form, files=files)
        return [Submitted(j["id"], j["kind"], j["status"], j["queue"], j["depends_on"])
                for j in done["jobs"]]  # fmt: skip

    def tag(self, job_id: str, tags: Mapping[str, str] | Iterable[str] = (),
            remove: Iterable[str] = ()) -> dict[str, str]:  # fmt: skip
        """As Client.tag, through POST /jobs/{id}/tags (or /sweeps/{id}/tags for a sweep)."""
        body = {"set": labels_of(None, tags).tags, "remove": list(remove)}
        where = quote(job_id, safe="")
        try:
            done = self._call("POST", f"/jobs/{where}/tags", json=body)
        except NotFound:
            try:
                done = self._call("POST", f"/sweeps/{where}/tags", json=body)
            except NotFound:
                raise NotFound(f"no job or sweep {job_id}") from None
        return {str(k): str(v) for k, v in dict(done["tags"]).items()}

    # -- reading -----------------------------------------------------------------------------

    def job_record(self, job_id: str) -> JobRecord:
        import time

        doc: dict[str, Any] = self._call("GET", f"/jobs/{quote(job_id, safe='')}")
        self._recent = (doc["id"], time.monotonic(), doc)  # for attempts() right after
        return _job_record(doc)

    def _job_doc(self, job_id: str) -> dict[str, Any]:
        """The document job_record() read for this full id less than a second ago (`jobs
        show` reads the job, then its attempts: one request, not two), else GET it."""
        import time

        recent, self._recent = self._recent, None
        if recent is not None and recent[0] == job_id and time.monotonic() - recent[1] < 1.0:
            return recent[2]
        doc: dict[str, Any] = self._call("GET", f"/jobs/{quote(job_id, safe='')}")
        return doc

    def job_records(self, status: str | None = None, limit: int = 20) -> list[JobRecord]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return [_job_record(doc) for doc in self._call("GET", "/jobs", params=params)]

    def search_records(
        self, where: str | None = None, order_by: str | None = None,
        columns: str | None = None, limit: int = 20, offset: int = 0,
        status: str | None = None,
    ) -> list[tuple[JobRecord, dict[str, Any]]]:  # fmt: skip
        parse_search(where, order_by, columns)  # the same SpecError as directly, before a request
        given = {"where": where, "order_by": order_by, "columns": columns, "status": status}
        params = {"limit": limit, "offset": offset,
                  **{k: v for k, v in given.items() if v is not None}}  # fmt: skip
        docs = self._call("GET", "/jobs", params=params)
        return [(_job_record(doc), doc.get("values") or {}) for doc in docs]

    def attempts(self, job_id: str) -> list[AttemptRecord]:
        return [
            AttemptRecord(number=a["number"], worker=a["worker"], host=a["host"], pid=a["pid"],
                          device=a["device"], started_at=_moment(a["started_at"]),
                          ended_at=maybe_time(a["ended_at"]), outcome=a["outcome"],
                          error=a["error"])
            for a in self._job_doc(job_id)["attempt_log"]
        ]  # fmt: skip

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as a dict (the same document as `jobs show --json`)."""
        from kiln.render import job_to_dict

        doc = self._call("GET", f"/jobs/{quote(job_id, safe='')}")
        return job_to_dict(_job_record(doc), self.attempts(doc["id"]))

    def cancel(self, job_id: str) -> str:
        return str(self._call("POST", f"/jobs/{quote(job_id, safe='')}/cancel")["status"])

    def loss_rows(self, job_id: str, tail: int | None = None,
                  every: int = 1) -> list[tuple[int, float]]:  # fmt: skip
        params: dict[str, Any] = {"every": every, **({"tail": tail} if tail else {})}
        doc = self._call("GET", f"/jobs/{quote(job_id, safe='')}/losses", params=params)
        return [(int(step), float(loss)) for step, loss in doc["rows"]]

    def log_page(self, job_id: str, after: int | None = None,
                 tail: int | None = None) -> LogPage:  # fmt: skip
        given = {"after": after, "tail": tail}
        params = {k: v for k, v in given.items() if v is not None}
        doc = self._call("GET", f"/jobs/{quote(job_id, safe='')}/logs", params=params)
        lines = [LogLine(int(seq), _moment(at), str(stream), str(text))
                 for seq, at, stream, text in doc["lines"]]  # fmt: skip
        return LogPage(str(doc["status"]), lines, bool(doc["more"]))

    def compare(self, job_ids: Sequence[str], ic: str = "loo") -> pd.DataFrame:
        """The server's `GET /compare`: the same table as Client.compare."""
        from kiln.compare import check_ids, from_json

        ids = check_ids(job_ids, ic)
        return from_json(self._call("GET", "/compare", params={"ids": ids, "ic": ic})["jobs"])

    def posterior_stats(self, job_id: str) -> list[SiteStats]:
        sites = self._call("GET", f"/jobs/{quote(job_id, safe='')}/params")["sites"]
        return [
            SiteStats(s["site"], tuple(s["shape"]),
                      *(array_from_json(s[k], s["dtype"], tuple(s["shape"])) for k in STATS))
            for s in sites
        ]  # fmt: skip

    def live_workers(self, queue: str | None = None) -> list[str]:
        params = {"queue": queue} if queue else {}
        return list(self._call("GET", "/workers/live", params=params)["workers"])


Client.over_api = RemoteClient  # Client() with KILN_API_URL set is one of these


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _job_record(doc: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=doc["id"], kind=doc["kind"], status=doc["status"], model=doc["model"],
        queue=doc["queue"], priority=doc["priority"], step=doc["progress"]["step"],
        total_steps=doc["progress"]["total"], last_loss=doc["last_loss"],
        created_at=_moment(doc["created_at"]), started_at=maybe_time(doc["started_at"]),
        finished_at=maybe_time(doc["finished_at"]), attempts=doc["attempts"], worker=doc["worker"],
        error=doc["error"], dataset_id=doc["dataset_id"], depends_on=doc["depends_on"],
        sweep_id=doc.get("sweep_id"), spec=doc["spec"] or {}, info=doc["info"] or {},
        name=doc.get("name"), tags=dict(doc.get("tags") or {}),
        continued_from=doc.get("continued_from"),
    )  # fmt: skip
