"""Priors a linreg fit may override: Normal for a term's weight, Uniform for sigma."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from kiln.errors import SpecError

FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NormalPrior(BaseModel):
    model_config = FROZEN
    dist: Literal["normal"] = "normal"
    loc: float = 0.0
    scale: PositiveFloat = 1.0


class UniformPrior(BaseModel):
    model_config = FROZEN
    dist: Literal["uniform"] = "uniform"
    low: float = Field(default=0.0, ge=0.0)
    high: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> UniformPrior:
        if self.high <= self.low:
            raise ValueError(f"high must be above low (got low={self.low}, high={self.high})")
        return self


Prior = NormalPrior | UniformPrior


_PRIOR = re.compile(r"^\s*([^=]+?)\s*=\s*(normal|uniform)\s*\(\s*([^,]+)\s*,\s*([^)]+)\)\s*$", re.I)


def parse_prior_option(text: str) -> tuple[str, dict[str, Any]]:
    """`rugged=normal(0, 2)` or `sigma=uniform(0, 5)` -> (site, prior dict)."""
    match = _PRIOR.match(text)
    if not match:
        raise SpecError(
            f"--prior {text!r}: write NAME=normal(LOC, SCALE) or sigma=uniform(LOW, HIGH)",
            field="priors",
        )
    name, dist, a, b = match.groups()
    try:
        first, second = float(a), float(b)
    except ValueError:
        raise SpecError(f"--prior {text!r}: the parameters must be numbers", "priors") from None
    if dist.lower() == "normal":
        return name, {"dist": "normal", "loc": first, "scale": second}
    return name, {"dist": "uniform", "low": first, "high": second}
