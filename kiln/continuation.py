"""Continuing a fit (`jobs submit fit --continue ID --steps N`): the request and the record.

A continued fit is an ordinary job of its parent's kind (linreg_fit, library_fit,
user_svi_fit): its spec is the parent's, copied by the submit check
(scheduler/kinds/continuation.py), with `continued` saying where it starts. So predict,
export, plots and retries treat it as any fit. What a user may give is only the small
`ContinueSpec` below; everything else (model, data, formula, guide, options) is the parent's.
Base layer: imports only kiln.catalog and kiln.specerrors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from kiln.catalog import QueueName
from kiln.errors import SpecError
from kiln.specerrors import spec_error

# What a continuation may set; the rest is the parent's (the CLI's and API's refusals name it).
CONTINUE_FIELDS = ("steps", "lr", "seed", "device", "queue", "priority")
MAX_REF = 128  # characters of the parent's id, id prefix or name (kiln.labels.MAX_NAME_CHARS)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Continued(BaseModel):
    """Where a continued fit starts: its parent's id, the parent's step reached (this fit's
    first step: its loss rows carry on the parent's numbers) and how many more steps."""

    model_config = _FROZEN
    job: str = Field(min_length=4, max_length=32)
    step: int = Field(ge=0, lt=2**62)
    steps: PositiveInt = Field(le=2**62)

    @property
    def end(self) -> int:
        """The step the continued fit stops before (its total_steps)."""
        return self.step + self.steps


class ContinueSpec(BaseModel):
    """A request to continue fit `from_job` (an id, id prefix or name) by `steps` more SVI
    steps. Not a job kind: the check turns it into the parent's kind. lr, device, queue and
    priority default to the parent's; seed too (a library model's seed picks its split)."""

    model_config = _FROZEN
    family: ClassVar[Literal["fit"]] = "fit"
    kind: Literal["continue_fit"] = "continue_fit"
    from_job: str = Field(min_length=1, max_length=MAX_REF)
    steps: PositiveInt
    lr: float | None = Field(default=None, gt=0, le=1e38)
    seed: Annotated[int | None, Field(default=None, ge=0, lt=2**32)] = None
    device: Literal["cpu", "cuda", "auto"] | None = None
    queue: QueueName | None = None
    priority: int | None = Field(default=None, ge=0, le=9)


def parse_continue_spec(raw: dict[str, Any]) -> ContinueSpec:
    """Validate a continuation request; an option it does not take is refused by name (the
    parent's value is kept), and every bad field is listed in one SpecError."""
    extra = sorted(set(raw) - {"kind", "from_job", *CONTINUE_FIELDS})
    if extra:
        flags = ", ".join(f"--{k.replace('_', '-')}"[:80] for k in extra[:5])
        raise SpecError(
            f"{flags}: a continued fit keeps its parent's model, data and settings; give only"
            " --steps (how many more), --lr, --seed, --device, --queue or --priority",
            field=str(extra[0])[:80],
        )
    if isinstance(raw.get("from_job"), str) and CONTROL.search(raw["from_job"]):
        raise SpecError("--continue: a job id holds no control characters", field="from_job")
    try:
        return ContinueSpec.model_validate(raw)
    except ValidationError as e:
        raise spec_error(e, ("continue_fit",)) from None
