"""Submitter: the submission flows the Client and the `jobs` CLI share (one path for both).

Each `*_request` turns what a user gives (a data path or frame, a formula, a model file,
options) into a typed spec and its upload; `submit` checks and stores it by its kind
(scheduler.submit_job) and sends it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from kiln.continuation import ContinueSpec
from kiln.errors import DataError, NotFound, SpecError
from kiln.labels import Labels, labels_of
from kiln.settings import Settings
from kiln.specs import (
    BaseSpec,
    PredictSpec,
    parse_library_spec,
    parse_prior_option,
    parse_spec,
    parse_user_spec,
    validate_spec,
)
from kiln.sweepspec import parse_sweep_spec

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.kinds import Upload
    from scheduler.limits import Owner
    from scheduler.sweep import Submitted as SubmittedSweep


@dataclass(frozen=True, slots=True)
class FileBytes:
    """A file already read (an upload to the HTTP API): its name as the user gave it, and its
    bytes. Checked against the same caps, with the same messages, as a file on disk."""

    name: str
    content: bytes


Data: TypeAlias = "str | Path | pd.DataFrame | FileBytes"


@dataclass(frozen=True, slots=True)
class Request:
    """A spec and the bytes it carries, ready to submit."""

    spec: BaseSpec | ContinueSpec
    upload: Upload


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job just created: what `jobs submit` reports."""

    id: str
    kind: str
    status: str
    queue: str
    depends_on: str | None


class Submitter:
    """Submission flows over `settings`, a database and a broker (given by the subclass)."""

    settings: Settings

    def _sessionmaker(self) -> sessionmaker[Session]:
        raise NotImplementedError

    def _send(self, job_id: str, queue: str, priority: int) -> None:
        raise NotImplementedError

    # -- requests ---------------------------------------------------------------------------

    def fit_request(
        self, data: Data, formula: str, model: str = "linreg",
        priors: Mapping[str, Any] | Iterable[str] = (), **options: Any,
    ) -> Request:  # fmt: skip
        """A linreg fit: a CSV path or DataFrame and a formula. `priors`: {"rugged": {"dist":
        "normal", "loc": 0, "scale": 1}} or ["rugged=normal(0,1)", ...]."""
        from scheduler.kinds import Upload

        spec = parse_spec({"model": model, "formula": formula, "priors": _priors(priors),
                           **options})  # fmt: skip
        content, name = self._data_bytes(data)
        return Request(spec, Upload(content, name))

    def library_request(
        self, model: str, data: str | Path = "digits", settings: Iterable[str] = (),
        **fields: Any,
    ) -> Request:  # fmt: skip
        """A library model's fit: `digits`, an MNIST folder or a CSV file; `settings` are
        `key=value` options (see `jobs models`)."""
        from kiln.library import get_card, parse_options
        from scheduler.kinds import Upload

        options = parse_options(get_card(model), list(settings))
        path = Path(data)
        content: bytes | None = None
        if str(data) == "digits":
            kind, name = "builtin", "digits"
        elif path.is_dir():
            from kiln.library.digits import read_mnist_dir

            kind, name = "npz", path.name
            content = read_mnist_dir(path, self.settings.max_dataset_bytes)
        else:
            kind, name, content = "csv", path.name, self._read(path)
        spec = parse_library_spec({"model": model, "data": name, "data_kind": kind,
                                   "options": options, **fields})  # fmt: skip
        return Request(spec, Upload(content, name))

    def library_upload_request(
        self, model: str, data: FileBytes | None, data_kind: str, options: Mapping[str, Any],
        **fields: Any,
    ) -> Request:  # fmt: skip
        """A library model's fit from an upload (the HTTP API's): `data_kind` csv, or npz (an
        MNIST folder as `jobs` packs it); no upload: the built-in `digits`. The options are
        checked by the model's card when the job is submitted."""
        from scheduler.kinds import Upload

        if data is None:
            spec = parse_library_spec({"model": model, "data": "digits", "data_kind": "builtin",
                                       "options": dict(options), **fields})  # fmt: skip
            return Request(spec, Upload())
        if data_kind not in ("csv", "npz"):
            raise SpecError(f"data_kind {data_kind[:20]!r}: csv or npz for an upload",
                            field="data_kind")  # fmt: skip
        content = self._read(data)
        spec = parse_library_spec({"model": model, "data": data.name, "data_kind": data_kind,
                                   "options": dict(options), **fields})  # fmt: skip
        return Request(spec, Upload(content, data.name))

    def model_request(
        self, model: str | Path | FileBytes, data: Data | dict[str, Any], function: str = "model",
        method: str = "svi", **options: Any,
    ) -> Request:  # fmt: skip
        """A fit of your own Pyro model file, by SVI (guide, guide_function, steps, lr, ...)
        or MCMC (method nuts/hmc: warmup, samples, chains, target_accept, ...)."""
        from scheduler.kinds import Upload

        if not isinstance(model, str | Path | FileBytes):
            raise SpecError(f"model: a model file's path, or the model function (got a"
                            f" {type(model).__name__})", field="model")  # fmt: skip
        path = Path(model.name if isinstance(model, FileBytes) else model)
        spec = parse_user_spec({
            "model": f"{path.name}:{function}", "model_file": path.name,
            "model_function": function, "method": method, **options,
        })  # fmt: skip
        source = self._source(model)
        if isinstance(data, dict):
            content, name = json.dumps(data).encode(), "data.json"
        else:
            content, name = self._data_bytes(data)
        return Request(spec, Upload(content, name, source))

    def predict_request(
        self, from_job: str, num_samples: int = 800, data: Data | dict[str, Any] | None = None,
        **options: Any,
    ) -> Request:  # fmt: skip
        """A predict job from any fit (the fit's kind picks the predict kind); `data`: new
        rows (a CSV path or DataFrame; a JSON path or dict for a user model)."""
        from scheduler.kinds import Upload

        spec = validate_spec(
            PredictSpec, {"from_job": from_job, "num_samples": num_samples, **options}
        )
        if data is None:
            return Request(spec, Upload())
        if isinstance(data, dict):
            return Request(spec, Upload(json.dumps(data).encode(), "data.json"))
        content, name = self._data_bytes(data)
        return Request(spec, Upload(content, name))

    def continue_request(self, job_id: str, steps: int, **options: Any) -> Request:
        """A continuation of fit `job_id` (id, prefix or name) by `steps` more SVI steps,
        from its stored state; options: lr, seed, device, queue, priority (anything else is
        the parent's and refused)."""
        from kiln.continuation import parse_continue_spec
        from scheduler.kinds import Upload

        spec = parse_continue_spec({"from_job": job_id, "steps": steps, **options})
        return Request(spec, Upload())

    # -- submitting -------------------------------------------------------------------------

    def submit(self, request: Request, then_predict: int | None = None,
               owner: Owner | None = None, labels: Labels | None = None,
               ) -> list[Submitted]:  # fmt: skip
        """Check and store the request's job(s), then send them; the jobs created. `owner`:
        the HTTP API's caller, recorded with the jobs (and their cap checked). `labels`: the
        job's name and tags (kiln.labels.labels_of checks them)."""
        from scheduler.limits import Limits
        from scheduler.submit import submit_job

        jobs = submit_job(
            self._sessionmaker(), request.spec, request.upload, send=self._send,
            limits=Limits.from_settings(self.settings), then_predict=then_predict, owner=owner,
            labels=labels,
        )  # fmt: skip
        return [Submitted(j.id, j.kind, j.status, j.queue, j.depends_on) for j in jobs]

    def tag(self, job_id: str, tags: Mapping[str, str] | Iterable[str] = (),
            remove: Iterable[str] = ()) -> dict[str, str]:  # fmt: skip
        """Set tags (`{"study": "a"}` or `["study=a"]`) and remove tag keys on a job, or on a
        sweep and all its members (by id or name); the tags after the change."""
        from db.jobs import get_job
        from db.labels import retag_job, retag_sweep
        from db.sweeps import get_sweep

        changes, dropped = labels_of(None, tags).tags, list(remove)
        with self._sessionmaker()() as session:
            try:
                return retag_job(session, get_job(session, job_id), changes, dropped)
            except NotFound:
                pass
            try:
                sweep = get_sweep(session, job_id)
            except NotFound:
                raise NotFound(f"no job or sweep {job_id}") from None
            return retag_sweep(session, sweep, changes, dropped)

    def submit_fit(self, data: Data, formula: str, model: str = "linreg", **options: Any) -> str:
        """Queue a linreg fit; returns its job id. `name=` and `tags=` label it (as `--name`,
        `--tag`); every submit method takes them. Options as `jobs submit fit` (guide, steps,
        lr, seed, elbo, optim, num_samples, init, priors, device, queue, priority)."""
        labels = _labels(options)
        return self.submit(self.fit_request(data, formula, model, **options), labels=labels)[0].id

    def continue_fit(self, job_id: str, steps: int, **options: Any) -> str:
        """Queue `steps` more SVI steps of a succeeded, cancelled or failed fit, from its
        stored state (a new job of its kind; its losses carry on the parent's step numbers);
        returns the new job's id. Options: lr, seed, device, queue, priority."""
        return self.submit(self.continue_request(job_id, steps, **options))[0].id

    def submit_library(
        self, model: str, data: str | Path = "digits", settings: Iterable[str] = (),
        **fields: Any,
    ) -> str:  # fmt: skip
        """Queue a library model's fit (bnn-classifier, vae, forecast-*, hmm); its job id."""
        labels = _labels(fields)
        request = self.library_request(model, data, settings, **fields)
        return self.submit(request, labels=labels)[0].id

    def submit_model(
        self, model: str | Path | Callable[..., Any], data: Data | dict[str, Any],
        function: str = "model", method: str = "svi", **options: Any,
    ) -> str:  # fmt: skip
        """Queue a fit of your own Pyro model: a model file's path, or the model function
        itself (one defined in a file or a notebook cell; see model_file_of); its job id.

        `data`: a JSON or CSV path, a DataFrame (columns become arrays) or a dict of names to
        numbers and lists. `method`: svi (options guide, guide_function, steps, lr, ...) or
        nuts/hmc (warmup, samples, chains, target_accept, max_tree_depth, jit, ...).
        """
        source: str | Path | FileBytes
        if callable(model):
            source, function = model_file_of(model), model.__name__
        else:
            source = model
        labels = _labels(options)
        request = self.model_request(source, data, function, method, **options)
        return self.submit(request, labels=labels)[0].id

    def predict(
        self, from_job: str, num_samples: int = 800, data: Data | dict[str, Any] | None = None,
        **options: Any,
    ) -> str:  # fmt: skip
        """Queue a predict job from a fit (which may still be running); returns its id."""
        labels = _labels(options)
        request = self.predict_request(from_job, num_samples, data, **options)
        return self.submit(request, labels=labels)[0].id

    def submit_sweep(
        self, data: Data, formula: str, *, grid: Mapping[str, list[Any]] | None = None,
        priors: Mapping[str, Any] | Iterable[str] = (), sweep: Mapping[str, Any] | None = None,
        **base: Any,
    ) -> SubmittedSweep:  # fmt: skip
        """Queue a sweep of linreg fits: `grid` of settings, `sweep` options (seeds,
        bootstrap, group_by, vectorize, batch_size, seed), `base` settings of every member."""
        labels = _labels(base)
        document = {
            "base": {"model": "linreg", "formula": formula, "priors": _priors(priors), **base},
            "grid": dict(grid or {}), **dict(sweep or {}),
        }  # fmt: skip
        return self.submit_sweep_spec(document, data, labels=labels)

    def submit_sweep_spec(
        self, document: Mapping[str, Any], data: Data, owner: Owner | None = None,
        labels: Labels | None = None,
    ) -> SubmittedSweep:  # fmt: skip
        """Queue a sweep given as its spec document (`{"base": {...}, "grid": {...}, "seeds":
        N, ...}`, kiln.sweepspec.SweepSpec) and its data; `owner` as for `submit`; `labels`: the
        sweep's name and the tags it and every member carry."""
        from scheduler.limits import Limits
        from scheduler.sweep import submit_sweep

        spec = parse_sweep_spec(dict(document))
        content, name = self._data_bytes(data)
        return submit_sweep(
            self._sessionmaker(), spec, content, data_name=name, send=self._send,
            limits=Limits.from_settings(self.settings), owner=owner, labels=labels,
        )  # fmt: skip

    # -- data -------------------------------------------------------------------------------

    def _read(self, path: str | Path | FileBytes) -> bytes:
        from scheduler.limits import read_data_file

        if isinstance(path, FileBytes):  # read_data_file's checks, on bytes
            size, limit = len(path.content), self.settings.max_dataset_bytes
            if size > limit:
                raise DataError(f"data file {path.name} is {size} bytes; the limit is {limit}")
            return path.content
        return read_data_file(path, self.settings.max_dataset_bytes)

    def _source(self, model: str | Path | FileBytes) -> str:
        """A model file's text: read_source_file's checks, on a path or on bytes."""
        from scheduler.usermodel import read_source_file

        if not isinstance(model, FileBytes):
            return read_source_file(model, self.settings.max_source_bytes)
        size, limit = len(model.content), self.settings.max_source_bytes
        if size > limit:
            raise SpecError(f"model file {model.name} is {size} bytes; the limit is {limit}",
                            "model")  # fmt: skip
        try:
            return model.content.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"model file {model.name} is not UTF-8 text", "model") from None

    def _data_bytes(self, data: Data) -> tuple[bytes, str]:
        """Bytes and a name, from a path, an upload or a DataFrame (as CSV)."""
        import pandas as pd

        if isinstance(data, FileBytes):
            return self._read(data), Path(data.name).name
        if isinstance(data, pd.DataFrame):
            return data.to_csv(index=False).encode(), "dataframe.csv"
        return self._read(data), Path(data).name


def _labels(options: dict[str, Any]) -> Labels:
    """Take `name` and `tags` (a dict or `key=value` items) out of a submit call's options."""
    return labels_of(options.pop("name", None), options.pop("tags", None))


def _priors(priors: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    if isinstance(priors, Mapping):
        return dict(priors)
    if isinstance(priors, str):
        raise SpecError("priors: give a list of NAME=dist(...) strings or a mapping", "priors")
    return dict(parse_prior_option(p) for p in priors)


# What a model function's file starts with when it is sent as its own source (model_file_of):
# the imports a Pyro model written in a notebook cell takes for granted.
FUNCTION_PRELUDE = (
    "import math\n"
    "import torch\n"
    "import pyro\n"
    "import pyro.distributions as dist\n"
    "from pyro import poutine\n"
    "from pyro.nn import PyroModule, PyroSample\n\n"
)


def model_file_of(function: Callable[..., Any]) -> FileBytes:
    """A model file made of a model function's own source (what `inspect` can find: a file's
    or a notebook cell's), after the usual Pyro imports. Helpers and globals it uses must be
    passed as data or defined inside it; the job's error names what was missing."""
    import inspect
    import textwrap

    name = getattr(function, "__name__", "")
    if not name.isidentifier() or name == "<lambda>":
        raise SpecError("model: give a function defined with `def` (not a lambda)", "model")
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as e:
        raise SpecError(f"model: the source of {name}() cannot be found ({e}); save it in a"
                        " file and give the file's path", "model") from None  # fmt: skip
    return FileBytes(f"{name}.py", (FUNCTION_PRELUDE + source).encode())
