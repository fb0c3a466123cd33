"""Limits: the caps from the settings that every submission is checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import DataError, SpecError, UserError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps from the settings that a submission is checked against."""

    max_steps: int
    max_attempts: int
    max_predict_samples: int
    max_predict_values: int
    worker_alive_s: float = 20.0  # for routing device=auto to a GPU worker that is free
    max_sweep_members: int = 20_000
    sweep_max_batch: int = 1024
    sweep_memory_mb: float = 512.0
    max_dataset_bytes: int = 512 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_steps=settings.max_steps,
            max_attempts=settings.max_attempts,
            max_predict_samples=settings.max_predict_samples,
            max_predict_values=settings.max_predict_values,
            worker_alive_s=settings.worker_alive_s,
            max_sweep_members=settings.max_sweep_members,
            sweep_max_batch=settings.sweep_max_batch,
            sweep_memory_mb=settings.sweep_memory_mb,
            max_dataset_bytes=settings.max_dataset_bytes,
        )

    def check_steps(self, steps: int, what: str = "spec.steps") -> None:
        if steps > self.max_steps:
            raise SpecError(
                f"{what}: at most {self.max_steps} (got {count(steps)}; KILN_MAX_STEPS sets the"
                " cap)",
                field="steps",
            )

    def check_predict_size(self, num_samples: int, rows: int) -> None:
        """A predict job's draws must fit the configured caps (KILN_MAX_PREDICT_*)."""
        if num_samples > self.max_predict_samples:
            raise SpecError(
                f"spec.num_samples: at most {self.max_predict_samples} (got {count(num_samples)};"
                " KILN_MAX_PREDICT_SAMPLES sets the cap)",
                field="num_samples",
            )
        if num_samples * rows > self.max_predict_values:
            raise SpecError(
                f"spec.num_samples: {num_samples} draws x {rows} rows is {num_samples * rows}"
                f" values per site, above the cap of {self.max_predict_values}"
                " (KILN_MAX_PREDICT_VALUES); draw fewer samples or predict fewer rows",
                field="num_samples",
            )


@dataclass(frozen=True, slots=True)
class Owner:
    """Who submits through the HTTP API, and how many unfinished jobs they may hold."""

    user: str
    max_unfinished: int | None = None  # None: no cap (an admin)

    def check(self, session: Session, adding: int) -> None:
        """Refuse (UserError) when `adding` more jobs would pass the user's cap; run inside
        the transaction that adds them."""
        from db.jobs import unfinished_count

        if self.max_unfinished is None:
            return
        held = unfinished_count(session, self.user)
        if held + adding > self.max_unfinished:
            raise UserError(
                f"user {self.user} has {held} unfinished jobs (waiting, queued or running);"
                f" {adding} more would pass the cap of {self.max_unfinished}"
                " (KILN_USER_MAX_UNFINISHED, or the token's own); wait for some to end or"
                " cancel some"
            )


def count(number: int) -> str:
    """An integer for a message: as it is, or its size when it is absurdly long."""
    if abs(number) < 10**18:
        return str(number)
    if abs(number).bit_length() < 14_000:  # str() refuses ints of more than 4300 digits
        digits = len(str(abs(number)))
    else:
        digits = int(math.log10(abs(number))) + 1  # log10 takes an int of any size
    return f"a {digits}-digit number"


def read_data_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a data file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"data file {path} is {size} bytes; the limit is {max_bytes}")
    return path.read_bytes()
