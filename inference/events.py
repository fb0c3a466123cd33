"""Progress events that runners yield: SVI's Started, Step, Checkpoint, Finished, Metric;
MCMC's McmcStarted, ChainProgress, McmcFinished; a vectorised batch's BatchStep, BatchFinished
(frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from inference.vector_results import ManyResult


@dataclass(frozen=True, slots=True)
class Started:
    """The runner is about to take its first step; says what it chose (ELBO, device)."""

    elbo: str
    device: str
    total: int
    note: str = ""
    first_step: int = 0  # above 0 when resumed from a checkpoint


@dataclass(frozen=True, slots=True)
class Step:
    """One optimisation step done: 0-based step index, the total, and that step's loss."""

    step: int
    total: int
    loss: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Resumable state after `step` steps (the next step to take is `step`), as bytes."""

    step: int
    content: bytes

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, {len(self.content)} bytes)"


@dataclass(frozen=True, slots=True)
class Finished:
    """The last step is done."""

    steps: int
    final_loss: float


@dataclass(frozen=True, slots=True)
class McmcStarted:
    """MCMC chains are starting: the kernel (`nuts`/`hmc`), device, sizes per chain, whether
    jit_compile is tried, and how chains run (`processes` in parallel, or `sequential`)."""

    method: str
    device: str
    chains: int
    warmup: int
    samples: int
    jit: bool
    parallel: str


@dataclass(frozen=True, slots=True)
class ChainProgress:
    """One chain's iterations so far: `done` of `total` (warmup + samples), whether it is
    still warming up, and its divergent transitions after warmup."""

    chain: int
    done: int
    total: int
    warmup: bool
    divergences: int


@dataclass(frozen=True, slots=True)
class McmcFinished:
    """Every chain is done. `draws[site]` is (chains, samples, *site_shape) for latent and
    deterministic sites; `stats[name]` is (chains, samples). `jit` is False when any chain ran
    without jit_compile (`note` says why); `deterministic` names the pyro.deterministic sites."""

    draws: dict[str, NDArray[Any]]
    stats: dict[str, NDArray[Any]]
    chain_seconds: tuple[float, ...]
    jit: bool
    note: str = ""
    deterministic: tuple[str, ...] = ()
    # keep_warmup: each site's warmup draws, (chains, warmup, *site_shape); else empty.
    warmup_draws: dict[str, NDArray[Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.draws.items())
        return (
            f"McmcFinished({len(self.chain_seconds)} chains, draws: {shapes}; "
            f"stats: {', '.join(self.stats)}; jit={self.jit})"
        )


@dataclass(frozen=True, slots=True)
class Metric:
    """A named value measured after `step` steps (an epoch's end: train_elbo, test_elbo,
    test_accuracy ...); `epoch` is 1-based, 0 when not by epoch."""

    name: str
    step: int
    value: float
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class BatchStep:
    """A vectorised batch has taken `step` of its `total` steps (a count, not an index: the
    last BatchStep has step == total); `alive` members have a finite latest loss."""

    step: int
    total: int
    alive: int


@dataclass(frozen=True, slots=True)
class BatchFinished:
    """A vectorised batch is done: each member's result and the loss curves."""

    result: ManyResult

    def __repr__(self) -> str:
        r = self.result
        return f"BatchFinished({len(r.members)} members, {len(r.ok)} ok, {len(r.losses)} steps)"


Event = (
    Started
    | Step
    | Checkpoint
    | Finished
    | Metric
    | McmcStarted
    | ChainProgress
    | McmcFinished
    | BatchStep
    | BatchFinished
)
