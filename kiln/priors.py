"""Priors a linreg fit may override: Normal for a term's weight, Uniform for sigma.

A prior's numbers must be finite and fit a float32 (a vectorised sweep batch computes in
float32): |x| <= PRIOR_MAX, and a scale at least PRIOR_MIN_SCALE. A prior is told apart by its
`dist` (a tagged union), so a bad prior gets one message about its own fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from kiln.errors import SpecError

FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
PRIOR_MAX = 1e38  # float32's largest finite value is 3.4e38
PRIOR_MIN_SCALE = 1e-30  # a smaller scale underflows a float32 density to 0 or infinity
MAX_PRIOR_TEXT = 200  # characters of one --prior option


class NormalPrior(BaseModel):
    model_config = FROZEN
    dist: Literal["normal"] = "normal"
    loc: float = Field(default=0.0, ge=-PRIOR_MAX, le=PRIOR_MAX)
    scale: float = Field(default=1.0, gt=0.0, le=PRIOR_MAX)

    @model_validator(mode="after")
    def _representable(self) -> NormalPrior:
        if self.scale < PRIOR_MIN_SCALE:
            raise ValueError(f"scale must be at least {PRIOR_MIN_SCALE:g} (got {self.scale:g})")
        return self


class UniformPrior(BaseModel):
    model_config = FROZEN
    dist: Literal["uniform"] = "uniform"
    low: float = Field(default=0.0, ge=0.0, le=PRIOR_MAX)
    high: float = Field(default=10.0, gt=0.0, le=PRIOR_MAX)

    @model_validator(mode="after")
    def _ordered(self) -> UniformPrior:
        if self.high <= self.low:
            raise ValueError(f"high must be above low (got low={self.low}, high={self.high})")
        return self


def _dist(value: Any) -> str | None:
    """The union's tag: a dict's `dist` (normal when left out), a prior's own."""
    if isinstance(value, dict):
        dist = value.get("dist", "normal")
        return dist if isinstance(dist, str) else None
    return getattr(value, "dist", None)


Prior = Annotated[
    Annotated[NormalPrior, Tag("normal")] | Annotated[UniformPrior, Tag("uniform")],
    Discriminator(
        _dist,
        custom_error_type="prior_dist",
        custom_error_message="a prior is normal(LOC, SCALE), or uniform(LOW, HIGH) for sigma",
    ),
]


_PRIOR = re.compile(r"^\s*([^=]+?)\s*=\s*(normal|uniform)\s*\(\s*([^,]+)\s*,\s*([^)]+)\)\s*$", re.I)


def parse_prior_option(text: str) -> tuple[str, dict[str, Any]]:
    """`rugged=normal(0, 2)` or `sigma=uniform(0, 5)` -> (site, prior dict)."""
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    match = _PRIOR.match(text) if len(text) <= MAX_PRIOR_TEXT else None
    if not match:
        raise SpecError(
            f"--prior {shown}: write NAME=normal(LOC, SCALE) or sigma=uniform(LOW, HIGH)",
            field="priors",
        )
    name, dist, a, b = match.groups()
    try:
        first, second = float(a), float(b)
    except ValueError:
        raise SpecError(f"--prior {shown}: the parameters must be numbers", "priors") from None
    if dist.lower() == "normal":
        return name, {"dist": "normal", "loc": first, "scale": second}
    return name, {"dist": "uniform", "low": first, "high": second}
