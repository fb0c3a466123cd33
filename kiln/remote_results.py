"""Results over the HTTP API: the RemoteClient's reads of metrics, diagnostics, samples, draws and
whole JobResults, and the results bundle both sides speak (no pickle anywhere).

The bundle is a zip of .npy members (what np.savez writes): `meta.npy`, a JSON document as
uint8, names every other member (`a0`, `a1`...) by field and site and holds the scalar, string
and dict fields; the arrays keep their dtype and shape bit for bit. A reader refuses object
dtypes, members it was not told of, and more than MAX_RESULT_BYTES unpacked.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from kiln.errors import InfraError, KilnError, NotAllowed, NotFound, UserError
from kiln.rowlabels import check_column, checked_labels

if TYPE_CHECKING:
    import httpx

    from kiln.export import JobResults
    from kiln.reader import SampleSummary
    from kiln.settings import Settings

BUNDLE_FORMAT = 1
NPY = "application/x-npy"
BUNDLE = "application/x-kiln-results+zip"
MAX_RESULT_BYTES = 1024**3  # a response body, and a bundle's arrays unpacked
MAX_PROBLEM_BYTES = 64 * 1024  # an error's problem document
ARRAY_KINDS = "biufc"  # bool, integers, floats, complex: never objects, strings or records
# JobResults' fields held as arrays: a dict of site -> array, or one array (or None).
SITE_FIELDS = (
    "posterior", "row_sites", "sample_stats", "item_sites", "data_sites", "observed", "log_lik",
    "warmup",
)  # fmt: skip
ARRAY_FIELDS = ("X", "y", "rows", "log_lik_draws")
LOSS_FIELDS = ("loss_steps", "loss_values")


def encode_results(r: JobResults) -> bytes:
    """The bundle of `r`: its arrays as .npy members and the rest as one JSON document."""
    arrays: list[tuple[str, str | None, np.ndarray]] = []
    for name in SITE_FIELDS:
        arrays += [(name, site, values) for site, values in getattr(r, name).items()]
    # Rows labelled by a text column (--id-column) travel as JSON strings: .npy of a str
    # dtype is fine, but the reader takes numbers only, so there is one rule for members.
    text_rows = r.rows is not None and np.asarray(r.rows).dtype.kind == "U"
    arrays += [(name, None, getattr(r, name)) for name in ARRAY_FIELDS
               if getattr(r, name) is not None and not (name == "rows" and text_rows)]  # fmt: skip
    steps = np.asarray([s for s, _ in r.losses], dtype=np.int64)
    losses = np.asarray([v for _, v in r.losses], dtype=np.float64)
    arrays += [("loss_steps", None, steps), ("loss_values", None, losses)]
    plain = {f.name: getattr(r, f.name) for f in fields(r)
             if f.name not in (*SITE_FIELDS, *ARRAY_FIELDS, "losses")}  # fmt: skip
    plain["terms"] = list(r.terms)
    plain["row_labels"] = np.asarray(r.rows).tolist() if text_rows else None
    meta = {"format": BUNDLE_FORMAT, "fields": plain,
            "arrays": [[name, site] for name, site, _ in arrays]}  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as bundle:
        text = json.dumps(meta, allow_nan=True).encode("utf-8")  # Python on both ends: NaN is fine
        _write_member(bundle, "meta", np.frombuffer(text, dtype=np.uint8))
        for i, (_, _, values) in enumerate(arrays):
            _write_member(bundle, f"a{i}", np.asarray(values))
    return buffer.getvalue()


def _write_member(bundle: zipfile.ZipFile, name: str, values: np.ndarray) -> None:
    if values.dtype.kind not in ARRAY_KINDS:
        raise TypeError(f"{name}: dtype {values.dtype} cannot go in a results bundle")
    with bundle.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, values, allow_pickle=False)


def decode_results(body: bytes) -> JobResults:
    """The JobResults in a bundle. Raises InfraError for anything but what encode_results
    writes: object dtypes, unknown members or fields, more than MAX_RESULT_BYTES unpacked."""
    from kiln.export import JobResults

    try:
        with zipfile.ZipFile(io.BytesIO(body)) as bundle:
            members = bundle.infolist()
            unpacked = sum(m.file_size for m in members)
            if unpacked > MAX_RESULT_BYTES:
                raise _bad(f"{unpacked} bytes unpacked; the limit is {MAX_RESULT_BYTES}")
            names = {m.filename for m in members}
            meta = json.loads(_read_member(bundle, "meta", names).tobytes().decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
                raise _bad("not a results bundle of format 1")
            listed = meta["arrays"]
            if names != {"meta.npy", *(f"a{i}.npy" for i in range(len(listed)))}:
                raise _bad("its members are not the ones it lists")
            given: dict[str, Any] = dict(meta["fields"])
            if set(given) != set(BUNDLE_TYPES):
                raise _bad(f"fields {sorted(set(given) ^ set(BUNDLE_TYPES))} (un)expected")
            _check_fields(given)
            labels = given.pop("row_labels")
            given.update({name: {} for name in SITE_FIELDS})
            loss: dict[str, np.ndarray] = {}
            for i, (name, site) in enumerate(listed):
                values = _read_member(bundle, f"a{i}", names)
                if name in SITE_FIELDS and isinstance(site, str):
                    given[name][site] = values
                elif name in ARRAY_FIELDS and site is None:
                    given[name] = values
                elif name in LOSS_FIELDS and site is None:
                    loss[name] = values
                else:
                    raise _bad(f"unknown array {name!r}")
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise _bad(str(e)) from None
    steps, losses = loss.get("loss_steps"), loss.get("loss_values")
    if (steps is None or losses is None or steps.ndim != 1 or steps.shape != losses.shape
            or steps.dtype.kind not in "iu" or losses.dtype.kind != "f"):  # fmt: skip
        raise _bad("its losses are missing or not steps (integers) and losses (floats)")
    given["losses"] = list(zip(steps.tolist(), losses.tolist(), strict=True))
    given["terms"] = tuple(given.get("terms", ()))
    if labels is not None:
        if given.get("rows") is not None:
            raise _bad("it has row positions and row labels")
        try:
            given["rows"] = checked_labels(labels)
        except ValueError as e:
            raise _bad(str(e)) from None
    return JobResults(**given)


PLAIN_TYPES: dict[str, type | tuple[type, ...]] = {
    "job_id": str, "kind": str, "status": str, "fit_id": str, "fit_spec": dict, "info": dict,
    "kinds": dict, "terms": list, "response": str, "new_data": bool, "chains": int,
    "user_data": dict, "labels": dict,
}  # fmt: skip
# Fields of the bundle that are no JobResults field: rows labelled by text (--id-column).
BUNDLE_TYPES: dict[str, type | tuple[type, ...]] = {
    **PLAIN_TYPES, "row_labels": (list, type(None)),
}  # fmt: skip


def _check_fields(given: dict[str, Any]) -> None:
    for name, value in given.items():
        if not isinstance(value, BUNDLE_TYPES.get(name, object)):
            raise _bad(f"field {name} is a {type(value).__name__}")


def _read_member(bundle: zipfile.ZipFile, name: str, names: set[str]) -> np.ndarray:
    if f"{name}.npy" not in names:
        raise _bad(f"no member {name}")
    with bundle.open(f"{name}.npy") as member:
        values = np.lib.format.read_array(member, allow_pickle=False)
    if not isinstance(values, np.ndarray) or values.dtype.kind not in ARRAY_KINDS:
        raise _bad(f"member {name} has dtype {getattr(values, 'dtype', '?')}")
    return values


def _bad(why: str) -> InfraError:
    return InfraError(f"the server sent a results bundle Kiln does not read: {why}")


def encode_array(values: np.ndarray) -> bytes:
    """One array as a .npy file (no pickle: object dtypes are refused)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values), allow_pickle=False)
    return buffer.getvalue()


def decode_array(body: bytes) -> np.ndarray:
    """The array in a .npy body; InfraError for an object dtype or anything but .npy."""
    try:
        values = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InfraError(f"the server sent draws Kiln does not read: {e}") from None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in ARRAY_KINDS:
        raise InfraError("the server sent draws Kiln does not read: not a numeric .npy array")
    return values


class RemoteResults:
    """The RemoteClient's reads of results (kiln.reader.Reader's, over HTTP)."""

    settings: Settings
    _http: httpx.Client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # kiln.remote.RemoteClient's

    def _fetch(self, path: str, limit: int | None = None, method: str = "GET",
               **kwargs: Any) -> bytes:  # fmt: skip
        """`path`'s body as bytes: at most `limit` of them (MAX_RESULT_BYTES), else
        InfraError; an error answer is raised as Kiln's error (problem_error)."""
        import httpx

        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    body = _read(response, MAX_PROBLEM_BYTES, cut=True)
                    raise problem_error(response.status_code, body, response.reason_phrase)
                return _read(response, MAX_RESULT_BYTES if limit is None else limit)
        except httpx.HTTPError as e:
            raise InfraError(f"KILN_API_URL {self.settings.api_url} unreachable: {e}") from e

    def metric_rows(
        self, job_id: str, name: str | None = None
    ) -> list[tuple[str, int, int, float]]:
        params = {"name": name} if name is not None else {}
        doc = self._call("GET", f"/jobs/{_q(job_id)}/metrics", params=params)
        return [(str(n), int(step), int(epoch), _float(value))
                for n, step, epoch, value in doc["rows"]]  # fmt: skip

    def site_diagnostics(self, job_id: str) -> dict[str, np.ndarray]:
        doc = self._call("GET", f"/jobs/{_q(job_id)}/diagnostics")
        return {s["site"]: array_from_json(s["values"], s["dtype"], (3, *s["shape"]))
                for s in doc["sites"]}  # fmt: skip

    def sample_summaries(self, job_id: str, site: str | None = None) -> list[SampleSummary]:
        from db.results import SampleSummary

        params = {"site": site} if site is not None else {}
        doc = self._call("GET", f"/jobs/{_q(job_id)}/samples", params=params)
        return [
            SampleSummary(
                site=s["site"], kind=s["kind"], num_samples=int(s["num_samples"]),
                shape=tuple(s["shape"]), dtype=s["dtype"],
                stats=None if s["stats"] is None
                else array_from_json(s["stats"], "float64", (5, *s["shape"])),
            )
            for s in doc["sites"]
        ]  # fmt: skip

    def draws(self, job_id: str, sites: list[str] | None = None) -> dict[str, np.ndarray]:
        stored = [s.site for s in self.sample_summaries(job_id)]
        chosen = [s for s in stored if sites is None or s in sites]
        return {s: decode_array(self._fetch(f"/jobs/{_q(job_id)}/samples/{_q(s)}"))
                for s in chosen}  # fmt: skip

    def results(
        self, job_id: str, id_column: str | None = None, warmup: bool = False
    ) -> JobResults:
        """kiln.reader.Reader.results over the API: the server labels the rows (it has the
        data set) and reads the warmup draws."""
        params: dict[str, Any] = {}
        if id_column is not None:
            check_column(id_column)  # the same refusal as directly, before any request
            params["id_column"] = id_column
        if warmup:
            params["warmup"] = "true"
        return decode_results(self._fetch(f"/jobs/{_q(job_id)}/results", params=params))

    def latest_prediction(self, fit_id: str) -> str | None:
        found = self._call("GET", f"/jobs/{_q(fit_id)}/latest-prediction")["id"]
        return None if found is None else str(found)


def problem_error(status: int, body: bytes, reason: str = "") -> KilnError:
    """Kiln's error for an answer of `status` carrying a problem document (its `detail` is the
    server's message): 401/403 NotAllowed, 404 NotFound, 400/413/422 UserError, else
    InfraError."""
    try:
        detail = str(json.loads(body).get("detail"))
    except (ValueError, AttributeError):
        detail = body[:500].decode("utf-8", "replace") or reason
    if status in (401, 403):
        return NotAllowed(detail)
    if status == 404:
        return NotFound(detail)
    if status in (400, 413, 422):
        return UserError(detail)
    return InfraError(f"the server answered {status}: {detail}")


def _read(response: httpx.Response, limit: int, cut: bool = False) -> bytes:
    """The body, at most `limit` bytes: cut there (`cut`), else refused past it."""
    length = response.headers.get("content-length", "")
    if not cut and length.isdigit() and int(length) > limit:
        raise InfraError(f"the server's answer is {length} bytes; the limit is {limit}")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            if cut:
                chunks.append(chunk[: limit - size + len(chunk)])
                break
            raise InfraError(f"the server's answer is over {limit} bytes, the most Kiln reads")
        chunks.append(chunk)
    return b"".join(chunks)


def _q(part: str) -> str:
    """A path segment: a job id or a site name, whatever characters it has."""
    return quote(part, safe="")


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def array_from_json(values: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Nested lists from JSON (null: not finite, back to NaN) as an array of `shape`."""
    try:
        kind = np.dtype(dtype)
        if kind.kind not in ARRAY_KINDS:
            raise TypeError(f"dtype {dtype}")
        return np.asarray(_nan(values), dtype=kind).reshape(shape)
    except (TypeError, ValueError) as e:
        raise InfraError(f"the server sent an array Kiln does not read: {e}") from None


def _nan(values: Any) -> Any:
    """JSON's null back to NaN, at any depth."""
    if values is None:
        return float("nan")
    if isinstance(values, list):
        return [_nan(v) for v in values]
    return values
