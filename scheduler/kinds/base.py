"""What a submit-time check takes (Upload, CheckContext) and returns (Checked)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from kiln.errors import SpecError
from kiln.jobinfo import JobInfo
from kiln.specs import BaseSpec
from scheduler.limits import Limits


@dataclass(frozen=True, slots=True)
class Upload:
    """The bytes a submission carries: a data file (or none) and a model file's text."""

    data: bytes | None = None
    data_name: str | None = None
    source: str | None = None  # a user's model file (its name is the spec's model_file)


@dataclass(frozen=True, slots=True)
class NewDataset:
    """A data set to store with the job (content-addressed)."""

    content: bytes
    name: str
    format: str
    columns: list[str]
    num_rows: int


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check may consult: the database (read only) and the caps."""

    sessions: sessionmaker[Session]
    limits: Limits
    owner: str | None = None  # the HTTP API's caller: jobs it may build on are its own


@dataclass(frozen=True, slots=True)
class Checked:
    """A submission that passed its kind's check: everything the job row needs.

    `predict_rows`: how many rows a predict job from this fit draws for (None: not known).
    """

    spec: BaseSpec
    model: str
    info: JobInfo
    total_steps: int
    dataset: NewDataset | None = None
    source: str | None = None
    depends_on: str | None = None
    waiting: bool = False
    predict_rows: int | None = None
    # A continued fit reuses its parent's stored data set and model source, and starts at
    # the parent's step (its progress reads from there).
    dataset_id: str | None = None
    source_id: str | None = None
    continued_from: str | None = None
    first_step: int = 0


Check = Callable[[Any, Upload, CheckContext], Checked]


def require_data(upload: Upload, what: str) -> tuple[bytes, str]:
    """The upload's data and its name, or a SpecError saying the kind needs data."""
    if upload.data is None:
        raise SpecError(f"{what} needs --data", field="data")
    return upload.data, Path(upload.data_name or "data").name


def device_fits_queue(spec: BaseSpec) -> None:
    if spec.device == "cuda" and spec.queue == "cpu":
        raise SpecError("device cuda needs the gpu queue (got --queue cpu)", field="queue")
