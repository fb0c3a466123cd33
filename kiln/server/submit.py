"""Routes that submit: a fit (built-in linreg, or a user's model file), a predict job and a
continuation of a fit.

The form fields are `jobs submit fit`'s options; the uploads go through the same Submitter
requests and scheduler checks as `jobs submit`, so a bad one gets the same message.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from kiln.catalog import LIBRARY_MODELS
from kiln.errors import SpecError
from kiln.labels import Labels, labels_of
from kiln.server.auth import Submitter
from kiln.server.jobs import visible_job
from kiln.server.problems import PROBLEM_RESPONSES
from kiln.server.state import ServerState, state_of
from kiln.submitter import FileBytes
from kiln.submitter import Request as JobRequest
from scheduler.limits import Owner

router = APIRouter(responses=PROBLEM_RESPONSES, tags=["submit"])
# What a library model's fit takes besides its options (the rest it sets itself).
LIBRARY_FIELDS = frozenset({"optim", "num_samples", "seed", "device", "queue", "priority",
                            "checkpoint_every", "checkpoint_every_s"})  # fmt: skip
MAX_NAME = 255  # characters of an uploaded file's name (it is stored, and echoed in messages)

Opt = Annotated[str | None, Form()]
Name = Annotated[str | None, Form(description="A name for the job, unique among yours")]
Tags = Annotated[list[str] | None, Form(description="key=value, repeatable")]
OptInt = Annotated[int | None, Form()]
OptFloat = Annotated[float | None, Form()]


async def read_upload(upload: UploadFile | None, what: str) -> FileBytes | None:
    if upload is None:
        return None
    name = upload.filename or what
    if len(name) > MAX_NAME or not name.isprintable():
        raise SpecError(f"{what}: the file name must be 1 to {MAX_NAME} printable characters",
                        field=what)  # fmt: skip
    return FileBytes(name, await upload.read())


def _submitted(state: ServerState, request: JobRequest, owner: Owner,
               then_predict: int | None = None, labels: Labels | None = None,
               ) -> dict[str, Any]:  # fmt: skip
    """Check, store (with the owner, in the same transaction) and send; the jobs created."""
    created = state.client.submit(request, then_predict, owner=owner, labels=labels)
    return {"jobs": [{"id": j.id, "kind": j.kind, "status": j.status, "queue": j.queue,
                      "depends_on": j.depends_on} for j in created]}  # fmt: skip


@router.post("/jobs/fit", status_code=201, summary="Submit a fit")
async def submit_fit(
    request: Request, identity: Submitter,
    model: Annotated[str, Form(description="`linreg`, or FILE.py[:FUNCTION] with model_file")],
    data: Annotated[UploadFile | None, File(description="CSV, or JSON of names (a model"
                    " file's); a library model's CSV or packed MNIST (none: `digits`)")] = None,
    model_file: Annotated[UploadFile | None, File(description="Your Pyro model file")] = None,
    formula: Opt = None, priors: Opt = None,
    prior: Annotated[list[str] | None, Form(description="NAME=dist(A,B), repeatable")] = None,
    guide: Opt = None, guide_function: Opt = None, elbo: Opt = None, optim: Opt = None,
    steps: OptInt = None, lr: OptFloat = None, num_samples: OptInt = None, init: Opt = None,
    method: Annotated[Literal["svi", "nuts", "hmc"], Form()] = "svi",
    warmup: OptInt = None, samples: OptInt = None, chains: OptInt = None,
    target_accept: OptFloat = None, max_tree_depth: OptInt = None, num_steps: OptInt = None,
    jit: Opt = None, seed: OptInt = None, device: Opt = None, queue: Opt = None,
    priority: OptInt = None, checkpoint_every: OptInt = None, checkpoint_every_s: OptFloat = None,
    then_predict: OptInt = None, keep_warmup: Annotated[bool | None, Form()] = None,
    chains_per_unit: OptInt = None, until: Opt = None, max_samples: OptInt = None,
    check_every: OptInt = None,
    options: Annotated[str | None, Form(description="A library model's options, a JSON"
                                        " object (`jobs models` lists them)")] = None,
    data_kind: Annotated[Literal["csv", "npz"] | None, Form()] = None,
    name: Name = None, tag: Tags = None,
) -> dict[str, Any]:  # fmt: skip
    """A fit of the built-in `linreg` (data + formula), of a library model (options, data
    optional), or of your own model file by SVI or MCMC (method nuts/hmc). Fields as `jobs
    submit fit`'s options; `priors` is the spec's JSON object, `prior` the CLI's
    `NAME=dist(A,B)` (either, not both)."""
    state = state_of(request)
    labels = labels_of(name, tag or [])
    given = {k: v for k, v in {
        "guide": guide, "guide_function": guide_function, "elbo": elbo, "optim": optim,
        "steps": steps, "lr": lr, "num_samples": num_samples, "init": init, "warmup": warmup,
        "samples": samples, "chains": chains, "target_accept": target_accept,
        "max_tree_depth": max_tree_depth, "num_steps": num_steps, "jit": jit, "seed": seed,
        "device": device, "queue": queue, "priority": priority,
        "checkpoint_every": checkpoint_every, "checkpoint_every_s": checkpoint_every_s,
        "keep_warmup": keep_warmup, "chains_per_unit": chains_per_unit, "until": until,
        "max_samples": max_samples, "check_every": check_every,
    }.items() if v is not None}  # fmt: skip
    table = await read_upload(data, "data")
    if table is None and model not in LIBRARY_MODELS:
        raise SpecError("data: upload the data file (a CSV, or JSON for a model file)",
                        field="data")  # fmt: skip
    if options is not None and model not in LIBRARY_MODELS:
        raise SpecError("options: for library models only", field="options")
    source = await read_upload(model_file, "model_file")
    if source is not None:
        from scheduler.usermodel import parse_model_option

        if formula is not None or priors is not None or prior:
            raise SpecError("formula and priors are for built-in models; this is your own model",
                            field="model")  # fmt: skip
        _, function = parse_model_option(model)  # FILE.py[:FUNCTION], as on the CLI
        assert table is not None
        job = await run_in_threadpool(state.client.model_request, source, table, function,
                                      method, **given)  # fmt: skip
    elif model in LIBRARY_MODELS:
        if formula is not None or priors is not None or prior or method != "svi":
            raise SpecError(f"model {model}: a library model takes options, not a formula,"
                            " priors or an MCMC method", field="model")  # fmt: skip
        library = {k: v for k, v in given.items() if k in LIBRARY_FIELDS}
        unused = sorted(set(given) - LIBRARY_FIELDS)
        if unused:
            raise SpecError(f"{', '.join(unused)}: not for the library model {model}; it sets"
                            " its own (change its options: see `jobs models`)",
                            field="model")  # fmt: skip
        job = await run_in_threadpool(
            state.client.library_upload_request, model, table, data_kind or "csv",
            json_object(options, "options"), **library,
        )  # fmt: skip
    else:
        if method != "svi":
            raise SpecError(f"method {method}: MCMC runs your own model files (model_file);"
                            " built-in models are fitted by SVI", field="method")  # fmt: skip
        assert table is not None
        job = await run_in_threadpool(
            state.client.fit_request, table, formula or "", model,
            priors=_priors(priors, prior), **given,
        )  # fmt: skip
    return await run_in_threadpool(_submitted, state, job, identity.owner, then_predict, labels)


def _priors(priors: str | None, prior: list[str] | None) -> dict[str, Any] | list[str]:
    if priors is not None and prior:
        raise SpecError("give priors (a JSON object) or prior (NAME=dist(A,B)), not both",
                        field="priors")  # fmt: skip
    if priors is None:
        return list(prior or [])
    return json_object(priors, "priors")


def json_object(text: str | None, field: str) -> dict[str, Any]:
    """A form field holding a JSON object ({} when absent); SpecError for anything else."""
    if text is None:
        return {}
    try:
        parsed = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise SpecError(f"{field}: not JSON ({e})", field=field) from None
    if not isinstance(parsed, dict):
        raise SpecError(f"{field}: a JSON object", field=field)
    return parsed


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


@router.post("/jobs/{job_id}/predict", status_code=201, summary="Submit a predict job")
async def submit_predict(
    request: Request, identity: Submitter, job_id: str,
    data: Annotated[UploadFile | None, File(description="New rows (CSV, or JSON)")] = None,
    num_samples: Annotated[int, Form()] = 800, seed: OptInt = None, device: Opt = None,
    queue: Opt = None, priority: OptInt = None, name: Name = None, tag: Tags = None,
) -> dict[str, Any]:  # fmt: skip
    """Posterior predictive draws from the fit `job_id` (which may still be running)."""
    state = state_of(request)
    labels = labels_of(name, tag or [])
    given = {k: v for k, v in {"seed": seed, "device": device, "queue": queue,
                               "priority": priority}.items() if v is not None}  # fmt: skip
    rows = await read_upload(data, "data")

    def fit_id() -> str:
        with state.sessions() as session:
            return visible_job(session, identity, job_id).id

    fit = await run_in_threadpool(fit_id)
    job = await run_in_threadpool(state.client.predict_request, fit, num_samples, rows, **given)
    return await run_in_threadpool(_submitted, state, job, identity.owner, None, labels)


@router.post("/jobs/{job_id}/continue", status_code=201, summary="Continue a fit")
async def submit_continue(
    request: Request, identity: Submitter, job_id: str,
    steps: Annotated[int, Form(description="How many more SVI steps")],
    lr: OptFloat = None, seed: OptInt = None, device: Opt = None, queue: Opt = None,
    priority: OptInt = None, name: Name = None, tag: Tags = None,
) -> dict[str, Any]:  # fmt: skip
    """`steps` more SVI steps of your fit `job_id` (succeeded, cancelled, or failed with a
    checkpoint), from its stored state: a new job of its kind whose losses carry on its step
    numbers. Only your own fits can be continued (another's is not found)."""
    state = state_of(request)
    labels = labels_of(name, tag or [])
    given = {k: v for k, v in {"lr": lr, "seed": seed, "device": device, "queue": queue,
                               "priority": priority}.items() if v is not None}  # fmt: skip
    job = await run_in_threadpool(state.client.continue_request, job_id, steps, **given)
    return await run_in_threadpool(_submitted, state, job, identity.owner, None, labels)
