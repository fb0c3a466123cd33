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
from kiln.until import parse_until

__all__ = ["Prior", "parse_prior_option"]  # re-exported: the CLI's --prior and --grid

Family = Literal["fit", "predict", "batch", "chain"]
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
    # auto: the potential compiled once (torch.jit), falling back where tracing fails, and
    # the step compiled to C++ by inductor when the first iterations foretell a long run
    # (inference.mcmc_units.AUTO_PROBE); inductor: that from the start (needs a compiler).
    jit: Literal["auto", "off", "inductor"] = "auto"
    keep_warmup: bool = False  # store the warmup draws too (`jobs export --warmup`)
    # Chains run as units of work (child jobs of kind user_mcmc_chain), this many chains each,
    # vectorised in one process: any worker of the queue claims a unit. None: the submitter
    # spreads the chains over the queue's live workers (all in one unit when there is one).
    chains_per_unit: PositiveInt | None = Field(default=None, le=64)
    # Stop on convergence: "r_hat<1.01,ess_bulk>400"; sample in chunks of check_every draws
    # up to max_samples (then `samples` is the least kept). All chains run in one unit.
    until: str | None = Field(default=None, max_length=200)
    max_samples: PositiveInt | None = Field(default=None, le=1_000_000)
    check_every: PositiveInt = Field(default=250, le=1_000_000)

    @model_validator(mode="after")
    def _until(self) -> UserMcmcFitSpec:
        if self.until is None:
            if self.max_samples is not None:
                raise ValueError("max_samples: only with --until (it caps the draws --until takes)")
            return self
        parse_until(self.until)
        return self

    @property
    def draws_cap(self) -> int:
        """The most draws a chain keeps: samples, or with --until max_samples (default:
        samples)."""
        return self.max_samples if self.until is not None and self.max_samples else self.samples

    @property
    def units(self) -> list[tuple[int, int]]:
        """(first chain, chains) of each unit of work."""
        size = self.chains_per_unit or self.chains
        size = self.chains if self.until is not None else min(size, self.chains)
        return [(c, min(size, self.chains - c)) for c in range(0, self.chains, size)]

    @property
    def total_steps(self) -> int:
        """Progress units: warmup + draws, summed over the chains."""
        return self.chains * (self.warmup + self.draws_cap)


class UserMcmcChainSpec(BaseSpec):
    """A unit of work of a user_mcmc_fit job: `count` of its chains from `first`, sampled in
    one process (made by the scheduler with the job; its settings are the parent's)."""

    family: ClassVar[Family] = "chain"
    kind: Literal["user_mcmc_chain"] = "user_mcmc_chain"
    parent: str = Field(min_length=4, max_length=32)
    first: int = Field(ge=0, le=63)
    count: PositiveInt = Field(le=64)
    steps: PositiveInt  # count x (warmup + the draws cap)

    @property
    def total_steps(self) -> int:
        return self.steps


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
    | BatchSpec
    | UserMcmcChainSpec,
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
    UserMcmcChainSpec,
)
JOB_KINDS: tuple[str, ...] = tuple(str(c.model_fields["kind"].default) for c in SPEC_CLASSES)

# The predict kind for each fit kind: `jobs submit predict --from FIT` picks it.
PREDICT_KIND: dict[str, type[PredictOptions]] = {
    "linreg_fit": PredictSpec,
    "library_fit": LibraryPredictSpec,
    "user_svi_fit": UserPredictSpec,
    "user_mcmc_fit": UserPredictSpec,
}

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
