"""Submit-time check of a predict job: its fit (any fit kind picks its predict kind), and new
rows checked against what the fit was given."""

from __future__ import annotations

from sqlalchemy import select

from db.datasets import load_dataset
from db.jobs import get_job
from db.models import Dataset, JobStatus
from db.sources import load_source
from kiln.errors import SpecError
from kiln.jobinfo import PredictInfo
from kiln.specs import (
    PREDICT_KIND,
    FitSpec,
    LibraryFitSpec,
    PredictOptions,
    UserMcmcFitSpec,
    UserSviFitSpec,
    parse_job_spec,
)
from kiln.tables import build_design, read_csv_bytes
from kiln.userdata import parse_user_data
from scheduler.kinds.base import CheckContext, Checked, NewDataset, Upload, require_data
from scheduler.kinds.user import data_rows
from scheduler.usermodel import check_data_names, check_source


def check_predict(spec: PredictOptions, upload: Upload, ctx: CheckContext) -> Checked:
    """Raises NotFound for an unknown fit, SpecError for a job that is not a fit or a fit that
    failed, DataError for new data the fit's model cannot take; nothing is written then."""
    with ctx.sessions() as session:
        fit = get_job(session, spec.from_job)
        if fit.kind != "fit":
            raise SpecError(
                f"--from {fit.id}: that is a {fit.kind} job; predict needs a fit job", "from_job"
            )
        if fit.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise SpecError(
                f"--from {fit.id}: that fit {fit.status}; there is nothing to predict from",
                field="from_job",
            )
        fit_spec = parse_job_spec(dict(fit.spec))
        # The fit's data and model file are read only to check new data against them.
        new = upload.data is not None
        fit_data = load_dataset(session, fit.dataset_id) if new and fit.dataset_id else None
        source = load_source(session, fit.source_id).content if new and fit.source_id else None
        fit_rows = int((fit.info or {}).get("data", {}).get("rows_used") or 0)
        fit_table_rows = (
            session.scalar(select(Dataset.num_rows).where(Dataset.id == fit.dataset_id))
            if fit.dataset_id
            else None
        )
        waiting = fit.status != JobStatus.SUCCEEDED
        fit_id, fit_model = fit.id, fit.model
    kind = PREDICT_KIND[fit_spec.kind]
    own = kind.model_validate({**spec.model_dump(exclude={"kind"}), "from_job": fit_id})
    dataset: NewDataset | None = None
    if isinstance(fit_spec, LibraryFitSpec):
        if upload.data is not None:
            raise SpecError(
                f"--data: a {fit_model} fit predicts for its own held-out data; new data is"
                " not supported for library models yet",
                field="data",
            )
        rows = 1
    elif isinstance(fit_spec, FitSpec):
        rows = fit_rows
        if upload.data is not None:
            content, name = require_data(upload, "predict")
            frame = read_csv_bytes(content, name)
            reference = read_csv_bytes(fit_data.content if fit_data else b"")
            design = build_design(
                frame, fit_spec.formula, reference=reference, require_response=False
            )
            rows = design.rows_used
            columns = [str(c) for c in frame.columns]
            dataset = NewDataset(content, name, "csv", columns, len(frame))
    else:
        # PREDICT_KIND above has taken only fit kinds: what is left is a user fit.
        assert isinstance(fit_spec, UserSviFitSpec | UserMcmcFitSpec)
        rows, dataset = _user_data(fit_spec, upload, source, fit_table_rows or 1)
    ctx.limits.check_predict_size(own.num_samples, rows)
    return Checked(
        spec=own,
        model=fit_model,
        info=PredictInfo(rows=rows, new_data=dataset is not None),
        total_steps=1,
        dataset=dataset,
        depends_on=fit_id,
        waiting=waiting,
    )


def _user_data(
    fit_spec: UserSviFitSpec | UserMcmcFitSpec, upload: Upload, source: str | None, rows: int
) -> tuple[int, NewDataset | None]:
    """New data for a user model: the names its function takes (the observed ones may be
    left out: they are what is predicted)."""
    if upload.data is None:
        return rows, None
    if source is None:
        raise SpecError(f"--from: the fit of {fit_spec.model} has no stored model source")
    content, name = require_data(upload, "predict")
    data_format, data = parse_user_data(content, name)
    signature = check_source(source, fit_spec.model_file, [fit_spec.model_function])
    for sig in signature.values():
        check_data_names(sig, data, name)
    return data_rows(data), NewDataset(content, name, data_format, list(data), data_rows(data))
