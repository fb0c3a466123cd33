"""Submit-time check of a continuation (`--continue ID --steps N`): the parent must be an SVI
fit that has ended with a state to go on from; the new job is of the parent's kind, with the
parent's spec, data set and model source, starting at the parent's step."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.jobs import get_job
from db.models import Checkpoint, Dataset, FittedState, Job, JobStatus
from kiln.continuation import Continued, ContinueSpec
from kiln.errors import SpecError
from kiln.jobinfo import SviInfo
from kiln.library import get_card, parse_options
from kiln.library.cards import check_option_bounds
from kiln.specs import FitSpec, LibraryFitSpec, UserSviFitSpec, parse_job_spec
from scheduler.kinds.base import CheckContext, Checked, Upload, device_fits_queue

SviFitSpec = FitSpec | LibraryFitSpec | UserSviFitSpec
# inference.checkpoint.CHECKPOINT_FORMAT's family (the scheduler does not import inference):
# a single fit's checkpoint; a vectorised batch's is not one a fit can go on from.
SVI_CHECKPOINT = "kiln-svi-checkpoint/"


def check_continuation(request: ContinueSpec, upload: Upload, ctx: CheckContext) -> Checked:
    """Raises NotFound for a fit that is not there (or not the caller's, over the HTTP API),
    SpecError for a job that is not an SVI fit, has not ended, or has no stored state; nothing
    is written then."""
    if upload.data is not None or upload.source is not None:
        raise SpecError("--data/--model: a continued fit uses its parent's data and model file;"
                        " give only --continue ID --steps N", field="data")  # fmt: skip
    ctx.limits.check_steps(request.steps, "--steps")
    with ctx.sessions() as session:
        parent = get_job(session, request.from_job, owner=ctx.owner)
        spec = parse_job_spec(dict(parent.spec)) if parent.kind == "fit" else None
        if not isinstance(spec, FitSpec | LibraryFitSpec | UserSviFitSpec):
            what = spec.kind if spec is not None else parent.kind
            raise SpecError(
                f"--continue {parent.id}: that is a {what} job; only SVI fits (linreg, library"
                " models, your own models by SVI) can be continued",
                field="from_job",
            )
        start = _start_step(session, parent)
        rows = _predict_rows(session, parent)
        parent_id, model, data_facts = parent.id, parent.model, (parent.info or {}).get("data")
        dataset_id, source_id = parent.dataset_id, parent.source_id
    child = _child_spec(spec, request, Continued(job=parent_id, step=start, steps=request.steps))
    device_fits_queue(child)
    return Checked(
        spec=child,
        model=model,
        info=SviInfo(data=data_facts, continued_from=parent_id, continued_at=start),
        total_steps=start + request.steps,
        predict_rows=rows,
        dataset_id=dataset_id,
        source_id=source_id,
        continued_from=parent_id,
        first_step=start,
    )


def _start_step(session: Any, parent: Job) -> int:
    """The step the continuation starts at: a succeeded fit's end (its fitted state), or the
    step of a cancelled or failed fit's latest checkpoint (its losses after it are not part
    of the continued curve)."""
    status = JobStatus(parent.status)
    if status == JobStatus.SUCCEEDED:
        if session.scalar(select(FittedState.job_id).where(FittedState.job_id == parent.id)):
            return int(parent.total_steps)
        raise SpecError(f"--continue {parent.id}: that fit has no stored fitted state",
                        field="from_job")  # fmt: skip
    if status in (JobStatus.CANCELLED, JobStatus.FAILED):
        saved = session.execute(
            select(Checkpoint.step, Checkpoint.format).where(Checkpoint.job_id == parent.id)
        ).first()
        if saved is not None and saved.format.startswith(SVI_CHECKPOINT):
            return int(saved.step)
        raise SpecError(
            f"--continue {parent.id}: that fit {status} before its first checkpoint, so there"
            " is no state to go on from; submit it again (--checkpoint-every N saves one every"
            " N steps)",
            field="from_job",
        )
    raise SpecError(
        f"--continue {parent.id}: that fit is {status}; a fit can be continued once it has"
        f" ended (`jobs cancel {parent.id}` stops it and keeps its checkpoint)",
        field="from_job",
    )


def _predict_rows(session: Any, parent: Job) -> int:
    """Rows a predict job from the continuation draws for: the parent's."""
    used = ((parent.info or {}).get("data") or {}).get("rows_used")
    if isinstance(used, int) and used > 0:
        return used
    if parent.dataset_id is None:
        return 1
    rows = session.scalar(select(Dataset.num_rows).where(Dataset.id == parent.dataset_id))
    return int(rows or 1)


def _child_spec(spec: SviFitSpec, request: ContinueSpec, continued: Continued) -> SviFitSpec:
    """The parent's spec with what the request may change; validated again as a whole."""
    update: dict[str, Any] = {"continued": continued.model_dump()}
    for key in ("device", "queue", "priority"):
        if getattr(request, key) is not None:
            update[key] = getattr(request, key)
    if isinstance(spec, LibraryFitSpec):
        if request.seed is not None and request.seed != spec.seed:
            raise SpecError(
                f"--seed: a {spec.model} fit's seed picks its data split and batches; its"
                f" continuation keeps the parent's ({spec.seed})",
                field="seed",
            )
        if request.lr is not None:
            options = {**spec.options, "lr": request.lr}
            card = get_card(spec.model)
            update["options"] = parse_options(card, options)
            check_option_bounds(card, update["options"])
    else:
        update["steps"] = continued.end  # a fit runs to `steps`; it starts at continued.step
        if request.lr is not None:
            update["lr"] = request.lr
    if request.seed is not None:
        update["seed"] = request.seed
    return type(spec).model_validate({**spec.model_dump(mode="json"), **update})
