"""Job specs: typed, frozen values checked once at the edge; parse_spec(dict) -> FitSpec."""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from kiln.catalog import ElboName, GuideName, LibraryModelName, ModelName, OptimName, QueueName
from kiln.errors import SpecError


class NormalPrior(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dist: Literal["normal"] = "normal"
    loc: float = 0.0
    scale: PositiveFloat = 1.0


class UniformPrior(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dist: Literal["uniform"] = "uniform"
    low: float = Field(default=0.0, ge=0.0)
    high: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> UniformPrior:
        if self.high <= self.low:
            raise ValueError(f"high must be above low (got low={self.low}, high={self.high})")
        return self


Prior = NormalPrior | UniformPrior


class FitSpec(BaseModel):
    """A fit of a built-in model by SVI."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fit"] = "fit"
    model: ModelName
    formula: str = Field(min_length=3)
    guide: GuideName = "AutoNormal"
    elbo: ElboName = "auto"
    optim: OptimName = "Adam"
    steps: PositiveInt = 1000
    lr: PositiveFloat = 0.02
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    num_samples: PositiveInt = Field(default=1000, le=100_000)
    init: Literal["auto", "median"] = "auto"
    priors: dict[str, Prior] = Field(default_factory=dict)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    queue: QueueName | None = None
    priority: int = Field(default=5, ge=0, le=9)
    # Resumable state every N steps and/or T seconds; None: the worker's KILN_CHECKPOINT_*.
    checkpoint_every: int | None = Field(default=None, ge=0)
    checkpoint_every_s: float | None = Field(default=None, ge=0)
    # A sweep member's rows (kiln.tables.member_design): the rows of one group, and/or
    # bootstrap replicate `bootstrap` drawn with `bootstrap_seed`.
    group_by: str | None = Field(default=None, min_length=1, max_length=255)
    group: str | None = Field(default=None, max_length=255)
    bootstrap: int | None = Field(default=None, ge=0)
    bootstrap_seed: int | None = Field(default=None, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _sigma_prior_is_uniform(self) -> FitSpec:
        for name, prior in self.priors.items():
            want = "uniform" if name == "sigma" else "normal"
            if prior.dist != want:
                raise ValueError(f"prior for `{name}` must be {want}(...) (got {prior.dist})")
        if (self.group_by is None) != (self.group is None):
            raise ValueError("group_by and group go together")
        if (self.bootstrap is None) != (self.bootstrap_seed is None):
            raise ValueError("bootstrap and bootstrap_seed go together")
        return self


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


class SweepSpec(BaseModel):
    """Many linreg fits: every combination of `grid`, times `seeds` seeds, times `bootstrap`
    resamples (if any), times the groups of `group_by` (if any). `base` holds the settings
    shared by every member (a FitSpec without seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sweep"] = "sweep"
    base: FitSpec
    grid: dict[str, list[float | int | str | dict[str, Any]]] = Field(default_factory=dict)
    seeds: PositiveInt = Field(default=1, le=100_000)
    bootstrap: int | None = Field(default=None, ge=1, le=100_000)
    group_by: str | None = Field(default=None, min_length=1, max_length=255)
    vectorize: Literal["auto", "on", "off"] = "auto"
    batch_size: int | None = Field(default=None, ge=1, le=100_000)
    seed: int | None = Field(default=None, ge=0, lt=2**32)

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


class UserFitSpec(BaseModel):
    """A user's own Pyro model (its source stored in the database), fitted by SVI or MCMC."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fit"] = "fit"
    source: Literal["user"] = "user"
    model: str = Field(min_length=1, max_length=255)  # as given: `eight_schools.py:model`
    model_file: str = Field(min_length=1, max_length=255)
    model_function: str = "model"
    model_source: str | None = None  # sha256:<hex> of the stored source, set when stored
    method: Literal["svi", "nuts", "hmc"] = "svi"
    # SVI: an autoguide name, or a function of the model file (`guide_function`).
    guide: GuideName = "AutoNormal"
    guide_function: str | None = None
    elbo: ElboName = "auto"
    optim: OptimName = "Adam"
    steps: PositiveInt = 1000
    lr: PositiveFloat = 0.01
    num_samples: PositiveInt = Field(default=1000, le=100_000)
    # MCMC: per chain, `warmup` adaptation iterations then `samples` kept draws.
    warmup: int = Field(default=1000, ge=0, le=1_000_000)
    samples: PositiveInt = Field(default=1000, le=1_000_000)
    chains: PositiveInt = Field(default=4, le=64)
    target_accept: float = Field(default=0.8, gt=0.0, lt=1.0)
    max_tree_depth: PositiveInt = Field(default=10, le=20)
    num_steps: PositiveInt | None = Field(default=None, le=10_000)  # HMC leapfrog steps
    jit: Literal["auto", "off"] = "auto"  # auto: jit_compile, falling back where tracing fails
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    queue: QueueName | None = None
    priority: int = Field(default=5, ge=0, le=9)
    checkpoint_every: int | None = Field(default=None, ge=0)
    checkpoint_every_s: float | None = Field(default=None, ge=0)

    @property
    def is_mcmc(self) -> bool:
        return self.method != "svi"

    @property
    def total_steps(self) -> int:
        """Progress units: SVI steps, or warmup + draws summed over the chains."""
        return self.chains * (self.warmup + self.samples) if self.is_mcmc else self.steps


class LibraryFitSpec(BaseModel):
    """A fit of a library model (bnn-classifier, forecast-*, vae, hmm) by mini-batched SVI;
    `options` are the model card's defaults as updated by `--set key=value`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fit"] = "fit"
    source: Literal["library"] = "library"
    model: LibraryModelName
    data: str = Field(min_length=1, max_length=255)  # `digits`, or the file's or folder's name
    data_kind: Literal["builtin", "csv", "npz"]
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)
    optim: OptimName = "Adam"
    num_samples: PositiveInt = Field(default=200, le=100_000)  # draws for the params summary
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    queue: QueueName | None = None
    priority: int = Field(default=5, ge=0, le=9)
    checkpoint_every: int | None = Field(default=None, ge=0)
    checkpoint_every_s: float | None = Field(default=None, ge=0)


class PredictSpec(BaseModel):
    """Posterior predictive draws from a fit's stored state, for its rows or new ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["predict"] = "predict"
    from_job: str = Field(min_length=4, max_length=32)
    num_samples: PositiveInt = 800
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    queue: QueueName | None = None
    priority: int = Field(default=5, ge=0, le=9)


def parse_sweep_spec(raw: dict[str, Any]) -> SweepSpec:
    """Validate a sweep spec; raise one SpecError listing every bad field."""
    return _validate(SweepSpec, raw)


JobSpec = FitSpec | UserFitSpec | LibraryFitSpec | PredictSpec


Spec = TypeVar("Spec", FitSpec, UserFitSpec, LibraryFitSpec, PredictSpec, SweepSpec)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    message = error["msg"]
    message = re.sub(r"^Value error, ", "", message)
    message = message.replace("Input should be greater than", "must be >")
    if error["type"] == "literal_error":
        message = "must be one of " + message.removeprefix("Input should be ")
    got = error.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"spec.{where}: {message}{shown}" if where else f"spec: {message}{shown}"


def parse_spec(raw: dict[str, Any]) -> FitSpec:
    """Validate a fit spec; raise one SpecError listing every bad field."""
    return _validate(FitSpec, raw)


def parse_user_spec(raw: dict[str, Any]) -> UserFitSpec:
    """Validate a user-model fit spec; raise one SpecError listing every bad field."""
    return _validate(UserFitSpec, raw)


def parse_library_spec(raw: dict[str, Any]) -> LibraryFitSpec:
    """Validate a library-model fit spec; raise one SpecError listing every bad field."""
    return _validate(LibraryFitSpec, raw)


def is_library_spec(spec: dict[str, Any]) -> bool:
    return spec.get("source") == "library"


def is_user_spec(spec: dict[str, Any]) -> bool:
    """Whether a stored fit spec is a user model's (it names its source)."""
    return spec.get("source") == "user"


def parse_predict_spec(raw: dict[str, Any]) -> PredictSpec:
    """Validate a predict spec; raise one SpecError listing every bad field."""
    return _validate(PredictSpec, raw)


def _validate(kind: type[Spec], raw: dict[str, Any]) -> Spec:
    try:
        return kind.model_validate(raw)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors()]
        first = e.errors()[0]["loc"]
        raise SpecError("; ".join(problems), field=str(first[0]) if first else None) from None


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
