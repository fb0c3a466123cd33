"""A sweep's spec: many linreg fits over a grid of settings, seeds, resamples and groups."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator, PositiveInt, model_validator

from kiln.specs import FROZEN, FitSpec, Key, Seed, plain_value, validate_spec


def _grid_value(value: Any) -> float | int | str | dict[str, Any]:
    """A grid value: a scalar as plain_value, or a whole prior (a dict, checked with the
    member's spec)."""
    if isinstance(value, dict):
        return value
    return plain_value(value)


# What a sweep's grid may vary: FitSpec fields, each with the type its values are read as.
GRID_KEYS: dict[str, type] = {
    "lr": float,
    "guide": str,
    "steps": int,
    "init": str,
    "elbo": str,
    "optim": str,
    "num_samples": int,
}
# `prior.SITE` grid keys set a site's whole prior: --grid "prior.rugged=normal(0,1),normal(0,10)".
PRIOR_KEY_PREFIX = "prior."
# Members that differ only in these (and in seed, resample and group) can share a batch: each
# is a tensor with one entry per member (priors: one loc/scale or low/high per member and site).
PACKABLE_KEYS = ("lr", "priors")


def is_grid_key(key: str) -> bool:
    return key in GRID_KEYS or (
        key.startswith(PRIOR_KEY_PREFIX) and len(key) > len(PRIOR_KEY_PREFIX)
    )


GridValue = float | int | str | dict[str, Any]
GridValues = list[Annotated[GridValue, PlainValidator(_grid_value)]]


class SweepSpec(BaseModel):
    """Many linreg fits: every combination of `grid`, times `seeds` seeds, times `bootstrap`
    resamples (if any), times the groups of `group_by` (if any). `base` holds the settings
    shared by every member (a FitSpec without seed). A submission, not a job: its members and
    batches are the jobs."""

    model_config = FROZEN
    kind: Literal["sweep"] = "sweep"
    base: FitSpec
    grid: dict[Key, Annotated[GridValues, Field(max_length=100_000)]] = Field(
        default_factory=dict, max_length=len(GRID_KEYS) + 100
    )
    seeds: PositiveInt = Field(default=1, le=100_000)
    bootstrap: int | None = Field(default=None, ge=1, le=100_000)
    group_by: str | None = Field(default=None, min_length=1, max_length=255)
    vectorize: Literal["auto", "on", "off"] = "auto"
    batch_size: int | None = Field(default=None, ge=1, le=100_000)
    seed: Seed = None

    @model_validator(mode="after")
    def _grid_keys(self) -> SweepSpec:
        for key, values in self.grid.items():
            if not is_grid_key(key):
                have = ", ".join([*GRID_KEYS, f"{PRIOR_KEY_PREFIX}SITE"])
                raise ValueError(f"grid key `{key}` cannot be swept (have: {have})")
            if not values:
                raise ValueError(f"grid key `{key}` has no values")
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"grid key `{key}` repeats a value")
        return self


def parse_sweep_spec(raw: dict[str, Any]) -> SweepSpec:
    """Validate a sweep spec; raise one SpecError listing every bad field."""
    return validate_spec(SweepSpec, raw)
