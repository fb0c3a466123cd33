"""Routes that submit: a fit (built-in linreg, or a user's model file) and a predict job.

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
from kiln.server.auth import Submitter
from kiln.server.jobs import visible_job
from kiln.server.state import ServerState, state_of
from kiln.submitter import FileBytes
from kiln.submitter import Request as JobRequest

router = APIRouter(tags=["submit"])
MAX_NAME = 255  # characters of an uploaded file's name (it is stored, and echoed in messages)

Opt = Annotated[str | None, Form()]
OptInt = Annotated[int | None, Form()]
OptFloat = Annotated[float | None, Form()]


async def _file(upload: UploadFile | None, what: str) -> FileBytes | None:
    if upload is None:
        return None
    name = upload.filename or what
    if len(name) > MAX_NAME or not name.isprintable():
        raise SpecError(f"{what}: the file name must be 1 to {MAX_NAME} printable characters",
                        field=what)  # fmt: skip
    return FileBytes(name, await upload.read())


def _submitted(state: ServerState, request: JobRequest, user: str,
               then_predict: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Check, store and send; record the owner; the jobs created."""
    from db.jobs import set_owner

    created = state.client.submit(request, then_predict)
    with state.sessions() as session:
        set_owner(session, [j.id for j in created], user)
    return {"jobs": [{"id": j.id, "kind": j.kind, "status": j.status, "queue": j.queue,
                      "depends_on": j.depends_on} for j in created]}  # fmt: skip


@router.post("/jobs/fit", status_code=201, summary="Submit a fit")
async def submit_fit(
    request: Request, identity: Submitter,
    model: Annotated[str, Form(description="`linreg`, or FILE.py[:FUNCTION] with model_file")],
    data: Annotated[UploadFile, File(description="CSV, or JSON of names (a model file's)")],
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
    then_predict: OptInt = None,
) -> dict[str, Any]:  # fmt: skip
    """A fit of the built-in `linreg` (data + formula), or of your own model file by SVI or
    MCMC (method nuts/hmc). Fields as `jobs submit fit`'s options; `priors` is the spec's
    JSON object, `prior` the CLI's `NAME=dist(A,B)` (either, not both)."""
    state = state_of(request)
    given = {k: v for k, v in {
        "guide": guide, "guide_function": guide_function, "elbo": elbo, "optim": optim,
        "steps": steps, "lr": lr, "num_samples": num_samples, "init": init, "warmup": warmup,
        "samples": samples, "chains": chains, "target_accept": target_accept,
        "max_tree_depth": max_tree_depth, "num_steps": num_steps, "jit": jit, "seed": seed,
        "device": device, "queue": queue, "priority": priority,
        "checkpoint_every": checkpoint_every, "checkpoint_every_s": checkpoint_every_s,
    }.items() if v is not None}  # fmt: skip
    table = await _file(data, "data")
    assert table is not None  # required by the form
    source = await _file(model_file, "model_file")
    if source is not None:
        from scheduler.usermodel import parse_model_option

        if formula is not None or priors is not None or prior:
            raise SpecError("formula and priors are for built-in models; this is your own model",
                            field="model")  # fmt: skip
        _, function = parse_model_option(model)  # FILE.py[:FUNCTION], as on the CLI
        job = await run_in_threadpool(state.client.model_request, source, table, function,
                                      method, **given)  # fmt: skip
    elif model in LIBRARY_MODELS:
        raise SpecError(
            f"model {model}: library models cannot be submitted over the HTTP API"
            " yet; submit them with `jobs` on the fleet's database",
            field="model",
        )
    else:
        if method != "svi":
            raise SpecError(f"method {method}: MCMC runs your own model files (model_file);"
                            " built-in models are fitted by SVI", field="method")  # fmt: skip
        job = await run_in_threadpool(
            state.client.fit_request, table, formula or "", model,
            priors=_priors(priors, prior), **given,
        )  # fmt: skip
    return await run_in_threadpool(_submitted, state, job, identity.user, then_predict)


def _priors(priors: str | None, prior: list[str] | None) -> dict[str, Any] | list[str]:
    if priors is not None and prior:
        raise SpecError("give priors (a JSON object) or prior (NAME=dist(A,B)), not both",
                        field="priors")  # fmt: skip
    if priors is None:
        return list(prior or [])
    try:
        parsed = json.loads(priors)
    except ValueError as e:
        raise SpecError(f"priors: not JSON ({e})", field="priors") from None
    if not isinstance(parsed, dict):
        raise SpecError("priors: a JSON object of site to prior", field="priors")
    return parsed


@router.post("/jobs/{job_id}/predict", status_code=201, summary="Submit a predict job")
async def submit_predict(
    request: Request, identity: Submitter, job_id: str,
    data: Annotated[UploadFile | None, File(description="New rows (CSV, or JSON)")] = None,
    num_samples: Annotated[int, Form()] = 800, seed: OptInt = None, device: Opt = None,
    queue: Opt = None, priority: OptInt = None,
) -> dict[str, Any]:  # fmt: skip
    """Posterior predictive draws from the fit `job_id` (which may still be running)."""
    state = state_of(request)
    given = {k: v for k, v in {"seed": seed, "device": device, "queue": queue,
                               "priority": priority}.items() if v is not None}  # fmt: skip
    rows = await _file(data, "data")

    def fit_id() -> str:
        with state.sessions() as session:
            return visible_job(session, identity, job_id).id

    fit = await run_in_threadpool(fit_id)
    job = await run_in_threadpool(state.client.predict_request, fit, num_samples, rows, **given)
    return await run_in_threadpool(_submitted, state, job, identity.user)
