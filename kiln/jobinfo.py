"""Typed job info (jobs.info): what a job records about itself, one model per family of kinds.

The submitter writes the data facts; the worker's Sink and the kind's runner add what the run
learns (device, ELBO, chains, timings, final figures). Stored as JSON; read back with
`info_for(kind, raw)`. The fields Kiln itself writes are typed; what a model reports about
its problem or its prediction (split sizes, a forecast's point estimates) is kept beside them
as the model said it (`add_facts`), so fits and predictions keep their documents' shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Json = dict[str, Any]


class _Info(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


# The kinds whose models report facts of their own (kept beside the typed fields).
_OPEN = ConfigDict(extra="allow", validate_assignment=True)


class SweepRef(_Info):
    """A sweep member's place: the sweep, its index, what sets it apart."""

    id: str
    index: int
    settings: Json = Field(default_factory=dict)


class ChainState(_Info):
    """One MCMC chain's latest progress."""

    done: int
    total: int
    warmup: bool
    divergences: int = 0


class JobInfo(_Info):
    """What every job may record."""

    data: Json | None = None  # facts about its data, from the submit-time check
    device: str | None = None
    note: str | None = None
    fit_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # the latest value of each
    sweep: SweepRef | None = None
    # A job that ran a user's model file: what it printed (stdout and stderr, the last
    # KILN_SANDBOX_OUTPUT_BYTES) and its sandbox's network isolation (`cut`, or why not).
    output: str | None = None
    sandbox_network: str | None = None

    def dump(self) -> Json:
        """The JSON stored in jobs.info (fields never set left out)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def add_facts(self, facts: Json) -> None:
        """What a model reported: into the typed field of that name, else kept as given."""
        for key, value in facts.items():
            setattr(self, key, value)


class SviInfo(JobInfo):
    """A fit by SVI (built-in, library or user model; a sweep member)."""

    model_config = _OPEN

    elbo: str | None = None
    resumed_from_step: int | None = None
    # A continued fit (`--continue`): its parent and the step it started at (the parent's).
    continued_from: str | None = None
    continued_at: int | None = None
    final_loss: float | None = None  # the mean loss of its last 100 steps (single or swept)
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch: str | None = None  # a sweep member fitted in this vectorised batch
    vectorized: bool = False


class McmcInfo(JobInfo):
    """A user model sampled by NUTS or HMC."""

    model_config = _OPEN

    method: str | None = None
    chains: int | None = None
    warmup: int | None = None
    samples: int | None = None
    jit: bool | None = None
    parallel: str | None = None
    chain_progress: dict[str, ChainState] = Field(default_factory=dict)
    chain_seconds: list[float] = Field(default_factory=list)
    divergences: int | None = None
    per_chain: list[Json] = Field(default_factory=list)
    max_r_hat: float | None = None
    # Kiln's own NUTS (`kiln`) or Pyro's kernels (`pyro`: a model with a discrete latent).
    engine: str | None = None
    # A unit of work (user_mcmc_chain): the iterations it resumed at, one per resume.
    resumed_at: list[int] = Field(default_factory=list)
    # A unit: how its sampler's step ran {compiler: torch.jit|inductor|"", inductor_from:
    # the iteration inductor took over or None, leapfrog_steps: lockstep steps}.
    step: Json | None = None
    # The job: its units, each {id, first, count, status, worker, attempts, resumed_at}.
    units: list[Json] = Field(default_factory=list)
    # --until: targets, each check {draws, r_hat, ess_bulk, ess_tail, failing}, met, draws.
    until: Json | None = None
    deterministic_sites: list[str] = Field(default_factory=list)


class PredictInfo(JobInfo):
    """A predict job: from which fit, how many draws, for how many rows, how well it covers."""

    model_config = _OPEN

    from_job: str | None = None
    num_samples: int | None = None
    rows: int | None = None
    new_data: bool = False
    observed: int | None = None
    coverage_90: float | None = None
    predict_seconds: float | None = None
    sites: list[str] = Field(default_factory=list)


class BatchInfo(JobInfo):
    """A vectorised batch of sweep members."""

    members: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    alive: int | None = None
    store_seconds: float | None = None


INFO_BY_KIND: dict[str, type[JobInfo]] = {
    "linreg_fit": SviInfo,
    "library_fit": SviInfo,
    "user_svi_fit": SviInfo,
    "user_mcmc_fit": McmcInfo,
    "predict": PredictInfo,
    "library_predict": PredictInfo,
    "user_predict": PredictInfo,
    "batch": BatchInfo,
    "user_mcmc_chain": McmcInfo,
}


def info_for(kind: str, raw: Json | None) -> JobInfo:
    """A job's stored info as its kind's model (an unknown kind reads as plain JobInfo)."""
    return INFO_BY_KIND.get(kind, JobInfo).model_validate(raw or {})
