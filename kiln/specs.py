"""Typed job specs, one per job kind, discriminated on `kind`; parse_job_spec(dict) -> JobSpec.

A job's spec is what the user asked for, checked once at the edge and stored as JSON; the
worker parses it back once (parse_job_spec) and passes the typed value on. `family` is the
coarse kind a job row records (fit, predict, batch): what `jobs list` shows and queries by.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from kiln.catalog import ElboName, GuideName, LibraryModelName, ModelName, OptimName, QueueName
from kiln.continuation import Continued
from kiln.priors import Prior, parse_prior_option
from kiln.specerrors import spec_error

__all__ = ["Prior", "parse_prior_option"]  # re-exported: the CLI's --prior and --grid

Family = Literal["fit", "predict", "batch"]
Device = Literal["cpu", "cuda", "auto"]
Seed = Annotated[int | None, Field(default=None, ge=0, lt=2**32)]
# allow_inf_nan=False: a NaN or infinite number in a spec is refused by name at the edge.
FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
MAX_TEXT = 255  # characters of a free-text value (a library option, a grid value)
MAX_KEY = 64  # characters of an option's or a grid's key
INT64 = 2**63
MAX_LR = 1e38  # a learning rate stays finite in float32 (a vectorised batch's dtype)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plain_value(value: Any) -> int | float | str | bool:
    """A scalar a spec may hold in a free-form mapping (library options, grid values): a bool,
    an integer that fits 64 bits, a finite float, or a short line of text. One message per bad
    value, instead of one per branch of a union."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("must be an integer that fits 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"must be at most {MAX_TEXT} characters")
        if CONTROL.search(value):
            raise ValueError("must not hold control characters (line breaks, NUL...)")
        return value
    raise ValueError("must be a number, text or true/false")


def _grid_value(value: Any) -> float | int | str | dict[str, Any]:
    """A grid value: a scalar as plain_value, or a whole prior (a dict, checked with the
    member's spec)."""
    if isinstance(value, dict):
        return value
    return plain_value(value)


OptionValue = Annotated[int | float | str | bool, PlainValidator(plain_value)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY)]


class BaseSpec(BaseModel):
    """What every job spec has: where it runs and how soon."""

    model_config = FROZEN
    family: ClassVar[Family] = "fit"
    seed: Seed = None
    device: Device = "cpu"
    queue: QueueName | None = None
    priority: int = Field(default=5, ge=0, le=9)

    @property
    def total_steps(self) -> int:
        """Progress units the job row starts with (a runner may refine them)."""
        return 1


class SviOptions(BaseModel):
    """Resumable state every N steps and/or T seconds; None: the worker's KILN_CHECKPOINT_*."""

    checkpoint_every: int | None = Field(default=None, ge=0, le=10**12)
    checkpoint_every_s: float | None = Field(default=None, ge=0, le=10**9)
    continued: Continued | None = None  # set by the submit check of `--continue` only


class FitSpec(BaseSpec, SviOptions):
    """A fit of the built-in linear regression on a CSV file and a formula, by SVI."""

    kind: Literal["linreg_fit"] = "linreg_fit"
    model: ModelName
    formula: str = Field(min_length=3, max_length=10_000)
    guide: GuideName = "AutoNormal"
    elbo: ElboName = "auto"
    optim: OptimName = "Adam"
    steps: PositiveInt = 1000
    lr: PositiveFloat = Field(default=0.02, le=MAX_LR)
    num_samples: PositiveInt = Field(default=1000, le=100_000)
    init: Literal["auto", "median"] = "auto"
    priors: dict[Annotated[str, Field(max_length=MAX_TEXT)], Prior] = Field(
        default_factory=dict, max_length=1000
    )
    # A sweep member's rows (kiln.tables.member_design): the rows of one group, and/or
    # bootstrap replicate `bootstrap` drawn with `bootstrap_seed`.
    group_by: str | None = Field(default=None, min_length=1, max_length=255)
    group: str | None = Field(default=None, max_length=255)
    bootstrap: int | None = Field(default=None, ge=0)
    bootstrap_seed: int | None = Field(default=None, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _consistent(self) -> FitSpec:
        for name, prior in self.priors.items():
            want = "uniform" if name == "sigma" else "normal"
            if prior.dist != want:
                raise ValueError(f"prior for `{name}` must be {want}(...) (got {prior.dist})")
        if (self.group_by is None) != (self.group is None):
            raise ValueError("group_by and group go together")
        if (self.bootstrap is None) != (self.bootstrap_seed is None):
            raise ValueError("bootstrap and bootstrap_seed go together")
        return self

    @property
    def total_steps(self) -> int:
        return self.steps

    @property
    def rows(self) -> dict[str, Any] | None:
        """A sweep member's row selection (None: all rows, once each)."""
        rows = {
            "group_by": self.group_by,
            "group": self.group,
            "bootstrap": self.bootstrap,
            "bootstrap_seed": self.bootstrap_seed,
        }
        return rows if any(v is not None for v in rows.values()) else None


class LibraryFitSpec(BaseSpec, SviOptions):
    """A fit of a library model (bnn-classifier, forecast-*, vae, hmm) by mini-batched SVI;
    `options` are the model card's defaults as updated by `--set key=value`."""

    kind: Literal["library_fit"] = "library_fit"
    model: LibraryModelName
    data: str = Field(min_length=1, max_length=255)  # `digits`, or the file's or folder's name
    data_kind: Literal["builtin", "csv", "npz"]
    options: dict[Key, OptionValue] = Field(default_factory=dict, max_length=100)
    optim: OptimName = "Adam"
    num_samples: PositiveInt = Field(default=200, le=100_000)  # draws for the params summary


class UserModelRef(BaseSpec):
    """A user's own Pyro model: its file, the function in it, the stored source's hash."""

    model: str = Field(min_length=1, max_length=255)  # as given: `eight_schools.py:model`
    model_file: str = Field(min_length=1, max_length=255)
    model_function: str = Field(default="model", min_length=1, max_length=255)
    model_source: str | None = Field(default=None, max_length=80)  # sha256:<hex>, once stored


class UserSviFitSpec(UserModelRef, SviOptions):
    """A user's model fitted by SVI: an autoguide, or a guide function of the model file."""

    kind: Literal["user_svi_fit"] = "user_svi_fit"
    guide: GuideName = "AutoNormal"
    guide_function: str | None = Field(default=None, max_length=255)
    elbo: ElboName = "auto"
    optim: OptimName = "Adam"
    steps: PositiveInt = 1000
    lr: PositiveFloat = Field(default=0.01, le=MAX_LR)
    num_samples: PositiveInt = Field(default=1000, le=100_000)

    method: ClassVar[str] = "svi"

    @property
    def total_steps(self) -> int:
        return self.steps


class UserMcmcFitSpec(UserModelRef):
    """A user's model sampled by NUTS or HMC: per chain, `warmup` adaptation iterations, then
    `samples` kept draws."""

    kind: Literal["user_mcmc_fit"] = "user_mcmc_fit"
    method: Literal["nuts", "hmc"] = "nuts"
    warmup: int = Field(default=1000, ge=0, le=1_000_000)
    samples: PositiveInt = Field(default=1000, le=1_000_000)
    chains: PositiveInt = Field(default=4, le=64)
    target_accept: float = Field(default=0.8, gt=0.0, lt=1.0)
    max_tree_depth: PositiveInt = Field(default=10, le=20)
    num_steps: PositiveInt | None = Field(default=None, le=10_000)  # HMC leapfrog steps
    jit: Literal["auto", "off"] = "auto"  # auto: jit_compile, falling back where tracing fails
    keep_warmup: bool = False  # store the warmup draws too (`jobs export --warmup`)

    @property
    def total_steps(self) -> int:
        """Progress units: warmup + draws, summed over the chains."""
        return self.chains * (self.warmup + self.samples)


class PredictOptions(BaseSpec):
    """What every predict job has: the fit it draws from and how many draws."""

    family: ClassVar[Family] = "predict"
    from_job: str = Field(min_length=4, max_length=32)
    num_samples: PositiveInt = 800

    @model_validator(mode="after")
    def _printable_id(self) -> PredictOptions:
        # a NUL cannot even be looked up on PostgreSQL (text holds none): refuse it by name
        if CONTROL.search(self.from_job):
            raise ValueError("--from: a job id holds no control characters (NUL, line breaks)")
        return self


class PredictSpec(PredictOptions):
    """Posterior predictive draws from a linreg fit's stored state, for its rows or new ones."""

    kind: Literal["predict"] = "predict"


class LibraryPredictSpec(PredictOptions):
    """A library model's predictions for its held-out data, from the fit's stored state."""

    kind: Literal["library_predict"] = "library_predict"


class UserPredictSpec(PredictOptions):
    """Posterior predictive draws of a user model's observed and deterministic sites: from the
    guide of an SVI fit, or from the stored draws of an MCMC fit; for the fit's data or new."""

    kind: Literal["user_predict"] = "user_predict"


class BatchSpec(BaseSpec):
    """A vectorised batch of sweep members (their own specs are theirs, on their job rows)."""

    family: ClassVar[Family] = "batch"
    kind: Literal["batch"] = "batch"
    sweep: str = Field(min_length=4, max_length=32)
    members: PositiveInt
    steps: PositiveInt

    @property
    def total_steps(self) -> int:
        return self.steps


JobSpec = Annotated[
    FitSpec
    | LibraryFitSpec
    | UserSviFitSpec
    | UserMcmcFitSpec
    | PredictSpec
    | LibraryPredictSpec
    | UserPredictSpec
    | BatchSpec,
    Field(discriminator="kind"),
]
UserFitSpec = UserSviFitSpec | UserMcmcFitSpec
AnyFitSpec = FitSpec | LibraryFitSpec | UserSviFitSpec | UserMcmcFitSpec
AnyPredictSpec = PredictSpec | LibraryPredictSpec | UserPredictSpec
_JOB_SPEC: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
SPEC_CLASSES: tuple[type[BaseSpec], ...] = (
    FitSpec,
    LibraryFitSpec,
    UserSviFitSpec,
    UserMcmcFitSpec,
    PredictSpec,
    LibraryPredictSpec,
    UserPredictSpec,
    BatchSpec,
)
JOB_KINDS: tuple[str, ...] = tuple(str(c.model_fields["kind"].default) for c in SPEC_CLASSES)

# The predict kind for each fit kind: `jobs submit predict --from FIT` picks it.
PREDICT_KIND: dict[str, type[PredictOptions]] = {
    "linreg_fit": PredictSpec,
    "library_fit": LibraryPredictSpec,
    "user_svi_fit": UserPredictSpec,
    "user_mcmc_fit": UserPredictSpec,
}

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


Spec = TypeVar("Spec", bound=BaseModel)


def validate_spec(kind: type[Spec], raw: dict[str, Any]) -> Spec:
    """Validate `raw` as a `kind`; raise one SpecError listing every bad field."""
    try:
        return kind.model_validate(raw)
    except ValidationError as e:
        raise spec_error(e, JOB_KINDS) from None


def parse_job_spec(raw: dict[str, Any]) -> JobSpec:
    """A stored or submitted spec of any job kind, by its `kind`."""
    try:
        return _JOB_SPEC.validate_python(raw)
    except ValidationError as e:
        raise spec_error(e, JOB_KINDS) from None


def parse_spec(raw: dict[str, Any]) -> FitSpec:
    """Validate a linreg fit spec; raise one SpecError listing every bad field."""
    return validate_spec(FitSpec, raw)


def parse_sweep_spec(raw: dict[str, Any]) -> SweepSpec:
    """Validate a sweep spec; raise one SpecError listing every bad field."""
    return validate_spec(SweepSpec, raw)


def parse_user_spec(raw: dict[str, Any]) -> UserSviFitSpec | UserMcmcFitSpec:
    """A user-model fit spec: by SVI, or by MCMC when `method` is nuts or hmc."""
    raw = dict(raw)
    method = raw.pop("method", "svi")
    if method == "svi":
        return validate_spec(UserSviFitSpec, raw)
    return validate_spec(UserMcmcFitSpec, {**raw, "method": method})


def parse_library_spec(raw: dict[str, Any]) -> LibraryFitSpec:
    """Validate a library-model fit spec; raise one SpecError listing every bad field."""
    return validate_spec(LibraryFitSpec, raw)
