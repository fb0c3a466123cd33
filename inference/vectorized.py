"""run_many() and fit_many(): many independent linreg fits as one vectorised Pyro program (an
outer plate), as a generator of BatchStep (and Checkpoint) events or as one call."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, ParamSpec

import numpy as np
import pyro
import pyro.util
import torch
from numpy.typing import NDArray
from pyro.infer import autoguide

from inference import checkpoint
from inference.events import BatchFinished, BatchStep, Checkpoint
from inference.posterior import summarize_draws
from inference.state import dump_param_state
from inference.statecodec import StateFormatError
from inference.svi import FINAL_LOSS_STEPS
from inference.vector_loss import _Adam, _member_losses, _traced
from inference.vector_model import _BatchedLinReg, _initial_values, _Priors, _summaries
from inference.vector_results import ManyResult, MemberResult
from kiln.errors import SpecError
from kiln.records import STATS, SiteStats

P = ParamSpec("P")

__all__ = ["GUIDES", "ManyResult", "MemberResult", "fit_many", "run_many"]

GUIDES = ("AutoNormal",)  # guides whose parameters are per member (no coupling across members)

Prior = Mapping[str, Mapping[str, float | str]]  # LinReg's priors: site -> {dist, loc, scale, ...}
Weights = NDArray[np.floating[Any] | np.integer[Any]]  # row weights or bootstrap counts


def _check(
    X: NDArray[np.float64], y: NDArray[np.float64], members: int,
    weights: Weights | None, seeds: Sequence[int], guide: str, init: str,
) -> NDArray[np.float64]:  # fmt: skip
    if guide not in GUIDES:
        raise SpecError(
            f"guide `{guide}` cannot be vectorised (have: {', '.join(GUIDES)}); "
            "run such members as ordinary fits",
            field="guide",
        )
    if init not in ("auto", "median"):
        raise SpecError(f"init `{init}`: use `auto` or `median`", field="init")
    if members < 1:
        raise SpecError(f"members must be >= 1 (got {members})", field="members")
    if len(seeds) != members:
        raise SpecError(f"give one seed per member ({members}), got {len(seeds)}", field="seeds")
    shared = X.ndim == 2 and y.shape == (X.shape[0],)
    own = X.ndim == 3 and X.shape[0] == members and y.shape == X.shape[:2]
    if not (shared or own):
        raise SpecError(
            "X must be (rows, terms) and y (rows,), or (members, rows, terms) and (members, rows);"
            f" got {X.shape} and {y.shape}"
        )
    rows = X.shape[-2]
    w = np.ones((members, rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (members, rows):
        raise SpecError(f"weights must be (members, rows) = ({members}, {rows}), got {w.shape}",
                        field="weights")  # fmt: skip
    if not np.isfinite(w).all() or (w < 0).any():
        raise SpecError("weights must be finite and >= 0 (row counts of a resample)",
                        field="weights")  # fmt: skip
    return w


class _Batch:
    """A batch set up to fit: the guide, its parameters, the optimiser and the compiled loss,
    and the loss curves and failures so far.

    Pyro's validation is off only while the batch computes (never while run_many is suspended
    at a yield): a member whose guide scale underflows to 0 (or whose sigma leaves its support)
    then gets a non-finite loss, which fails that member alone; with validation, Pyro would
    raise for the whole batch.
    """

    def __init__(
        self, prior: _Priors, args: tuple[torch.Tensor, ...], *, seed: int,
        rates: NDArray[np.float64], steps: int, init: str, jit: bool,
    ) -> None:  # fmt: skip
        members = len(rates)
        self.args, self.members = args, members
        self.sites = (*prior.terms, "sigma")
        model = _BatchedLinReg(prior, members)
        X = args[0]
        with pyro.validation_enabled(False):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            if init == "auto":
                start = autoguide.initialization.init_to_value(
                    values=_initial_values(prior, *args),
                    fallback=autoguide.initialization.init_to_median,
                )
                self.guide = autoguide.AutoNormal(model, init_loc_fn=start)
            else:
                self.guide = autoguide.AutoNormal(model)
            with torch.no_grad():
                self.guide(*args)  # makes the parameters, each (K, 1): member axis first
            self.params = list(self.guide.parameters())
            assert all(p.shape[0] == members for p in self.params), (
                "a guide parameter is shared by members"
            )
            self.adam = _Adam(self.params, torch.as_tensor(rates, dtype=X.dtype, device=X.device))
            guide = self.guide

            def batch_loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                return _member_losses(model, guide, (X, y, w), members)

            self.loss_fn = _traced(batch_loss, args) if jit else batch_loss
        self.alive = torch.ones(members, dtype=torch.bool, device=X.device)
        self.curve = torch.full((steps, members), float("nan"), dtype=torch.float64)
        self.failures: dict[int, tuple[int, str]] = {}
        self.done = 0

    def advance(self, until: int) -> None:
        """Take the steps from `done` up to `until` (one Adam step of every live member each)."""
        params, adam, args, alive = self.params, self.adam, self.args, self.alive
        with pyro.validation_enabled(False):
            for step in range(self.done, until):
                for p in params:
                    p.grad = None
                losses = self.loss_fn(*args)
                bad = alive & ~torch.isfinite(losses)
                if bad.any():
                    for k in bad.nonzero().flatten().tolist():
                        self.failures[k] = (step, f"loss is {losses[k].item()} at step {step}")
                    alive = alive & ~bad
                torch.autograd.backward(torch.where(alive, losses, torch.zeros_like(losses)).sum())
                grads = adam.gradients()  # (K, all parameters' elements)
                grad_ok = torch.isfinite(grads).all(-1)
                for k in (alive & ~grad_ok).nonzero().flatten().tolist():
                    self.failures[k] = (step, f"gradient is not finite at step {step}")
                alive = alive & grad_ok
                adam.step(grads, alive)
                self.curve[step] = torch.where(alive, losses.detach(), torch.nan).double().cpu()
        self.alive, self.done = alive, until

    def state(self) -> dict[str, Any]:
        """What resuming after `done` steps needs: parameters, Adam's moments, which members
        are alive, the loss curves and failures so far, and the RNG state (last, so nothing
        draws after it is taken). The curves are kept in the loss's dtype: exact."""
        rng: dict[str, Any] = {"pyro": pyro.util.get_rng_state()}
        device = self.args[0].device
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "done": self.done,
            "params": {n: p.detach().clone() for n, p in self._named_params().items()},
            "adam": self.adam.state(),
            "alive": self.alive.clone(),
            "curve": self.curve[: self.done].to(self.args[0].dtype).numpy(),
            "failures": {k: [step, what] for k, (step, what) in self.failures.items()},
            "rng": rng,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from state(): its values copied into this batch's own tensors (the compiled
        loss reads the parameters by name, so they are filled in place), the RNG state last."""
        named = self._named_params()
        saved: dict[str, torch.Tensor] = state["params"]
        if set(saved) != set(named) or any(
            tuple(v.shape) != tuple(named[n].shape) for n, v in saved.items()
        ):
            raise StateFormatError("a batch checkpoint's parameters do not fit this batch")
        with torch.no_grad():
            for name, value in saved.items():
                named[name].copy_(value)
        self.adam.load_state(state["adam"])
        self.alive = torch.as_tensor(state["alive"], dtype=torch.bool).to(self.alive.device)
        done = int(state["done"])
        self.curve[:done] = torch.as_tensor(state["curve"]).double()
        self.failures = {int(k): (int(v[0]), str(v[1])) for k, v in state["failures"].items()}
        self.done = done
        rng = state["rng"]
        pyro.util.set_rng_state(rng["pyro"])
        if "cuda" in rng and self.args[0].device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.args[0].device)

    @staticmethod
    def _named_params() -> dict[str, torch.Tensor]:
        """The guide's unconstrained parameters by name: the tensors Adam updates in place."""
        return dict(pyro.get_param_store().named_parameters())

    def alive_count(self) -> int:
        """Members whose latest loss is finite."""
        return int(torch.isfinite(self.curve[self.done - 1]).sum()) if self.done else self.members

    def draws(self, num_samples: int) -> dict[str, NDArray[np.float32]]:
        with pyro.validation_enabled(False):
            return _summaries(self.guide, self.args, self.sites, num_samples)


def _stops(steps: int, every: int, checkpoint_every: int, first: int) -> list[int]:
    """Steps done after which run_many yields BatchStep: each multiple of `every` (and of
    `checkpoint_every`, when set) after `first`, and the last."""
    marks = {*range(every, steps + 1, every), *([steps] if steps else [])}
    if checkpoint_every > 0:
        marks |= set(range(checkpoint_every, steps, checkpoint_every))
    return sorted(m for m in marks if m > first)


def _checkpoint_due(done: int, steps: int, every: int, every_s: float, since: float) -> bool:
    if done >= steps:
        return False  # the end stores the results instead
    by_steps = every > 0 and done % every == 0
    return by_steps or (every_s > 0 and time.monotonic() - since >= every_s)


def run_many(
    X: NDArray[np.float64],
    y: NDArray[np.float64],
    *,
    terms: Sequence[str],
    members: int,
    weights: Weights | None,
    seeds: Sequence[int],
    steps: int,
    lr: float | Sequence[float],
    guide: str = "AutoNormal",
    priors: Prior | Sequence[Prior | None] | None = None,
    init: str = "auto",
    num_samples: int = 1000,
    device: str = "cpu",
    progress_every: int = 50,
    jit: bool = True,
    checkpoint_every: int = 0,
    checkpoint_every_s: float = 0.0,
    resume: bytes | None = None,
) -> Generator[BatchStep | Checkpoint | BatchFinished, None, None]:
    """Fit `members` independent linreg models (LinReg's priors and sites) in one program,
    yielding BatchStep every `progress_every` steps and after the last step, then
    BatchFinished with the batch's ManyResult.

    Checkpoint (after a BatchStep) every `checkpoint_every` steps or, at the next BatchStep,
    once `checkpoint_every_s` seconds passed (0: never): its bytes (inference.checkpoint,
    no pickle) hold what going on needs. `resume` (such bytes, from a batch of the same
    arguments) goes on from there: with the same seed the result is the uninterrupted
    batch's, to the last bit when the loss is not compiled (jit=False).

    X is (rows, terms) and y (rows,), shared by every member, or (members, rows, terms) and
    (members, rows): one design per member (e.g. one per group, padded with rows of weight 0).
    `weights` (members, rows) weights each member's rows (bootstrap counts, 0 for padding;
    None: all ones). `lr` is one learning rate or one per member, `priors` one set of
    LinReg's priors or one per member (tensor rows, so a prior grid packs into one batch).
    Each member has its own AutoNormal loc/scale, and the loss is the sum of the members'
    losses, so one Adam step (torch's update rule, with a learning rate per member) is one
    step of every fit.

    Seeds: the batch draws from ONE random stream, seeded with `seeds[0]`; `seeds` is recorded
    per member. A member of a batch is therefore not bitwise the same as that member fitted
    alone with its seed, only statistically the same (same model, guide, start and steps).

    A member whose loss (or gradient) becomes non-finite is marked failed at that step: from
    then on its terms are left out of the loss and its parameters are held where they were,
    so the other members go on untouched. Closing the generator (or raising out of the loop
    that reads it) stops the batch at its latest BatchStep. Clears the param store. Raises
    SpecError for bad arguments, when the first event is asked for.
    """
    w = _check(X, y, members, weights, seeds, guide, init)
    if progress_every < 1:
        raise SpecError(f"progress_every must be >= 1 (got {progress_every})",
                        field="progress_every")  # fmt: skip
    rates = np.broadcast_to(np.asarray(lr, dtype=np.float64), (members,)).copy()
    if not (np.isfinite(rates) & (rates > 0)).all():
        raise SpecError(f"lr must be > 0 for every member (got {list(rates)})", field="lr")
    per_member = priors if isinstance(priors, Sequence) else [priors] * members
    if len(per_member) != members:
        raise SpecError(f"give one set of priors per member ({members}), got {len(per_member)}",
                        field="priors")  # fmt: skip
    prior = _Priors.of(terms, per_member, device)
    args = tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in (X, y, w))
    batch = _Batch(prior, args, seed=int(seeds[0]), rates=rates, steps=steps, init=init, jit=jit)
    if resume is not None:
        saved = checkpoint.load_batch(resume)
        if saved.members != members or not 0 < saved.step < steps:
            raise StateFormatError(f"a checkpoint of {saved.members} members at step "
                                   f"{saved.step} does not fit a batch of {members} members "
                                   f"and {steps} steps")  # fmt: skip
        batch.restore(saved.state)
    since = time.monotonic()
    for until in _stops(steps, progress_every, checkpoint_every, batch.done):
        batch.advance(until)
        content = None
        if _checkpoint_due(until, steps, checkpoint_every, checkpoint_every_s, since):
            content = checkpoint.capture_batch(until, members, batch.state())  # before a yield
            since = time.monotonic()
        yield BatchStep(step=until, total=steps, alive=batch.alive_count())
        if content is not None:
            yield Checkpoint(until, content)
    yield BatchFinished(_collect(batch, batch.draws(num_samples), rates, seeds))


def _drained(
    run: Callable[P, Iterator[BatchStep | Checkpoint | BatchFinished]],
) -> Callable[P, ManyResult]:
    def drain(*args: P.args, **kwargs: P.kwargs) -> ManyResult:
        for event in run(*args, **kwargs):
            if isinstance(event, BatchFinished):
                return event.result
        raise AssertionError("run_many ended without BatchFinished")

    drain.__doc__ = "run_many() to its end, in one call: the batch's ManyResult (see run_many)."
    return drain


fit_many = _drained(run_many)


def _collect(
    batch: _Batch, draws: dict[str, NDArray[np.float32]], rates: NDArray[np.float64],
    seeds: Sequence[int],
) -> ManyResult:  # fmt: skip
    """Each member's result: its summaries, draws and own fitted state, or why it failed."""
    saved = pyro.get_param_store().get_state()  # unconstrained values and their constraints
    unconstrained = {n: v.detach() for n, v in saved["params"].items()}
    constraints = saved["constraints"]
    losses_np: NDArray[np.float64] = batch.curve.numpy()
    stats = {s: summarize_draws(s, d) for s, d in draws.items()}  # each statistic (K,)
    results = []
    for k in range(batch.members):
        if k in batch.failures:
            step, what = batch.failures[k]
            reason = (
                f"member {k}: {what}; try a smaller lr (now {rates[k]:g}), other priors,"
                " or check this member's weights"
            )
            results.append(
                MemberResult(
                    k,
                    int(seeds[k]),
                    "failed",
                    _tail_mean(losses_np[:step, k]),
                    reason=reason,
                    failed_step=step,
                )  # fmt: skip
            )
            continue
        own_stats = tuple(
            SiteStats(site, (), *(np.asarray(getattr(st, n)[k]) for n in STATS))
            for site, st in stats.items()
        )
        # The member's own guide, shaped as a single fit's (scalar sites): a predict job
        # rebuilds it from these bytes like any fit's.
        own = {n: v[k].reshape(()).clone().cpu() for n, v in unconstrained.items()}
        state = dump_param_state(own, constraints)
        results.append(
            MemberResult(
                k,
                int(seeds[k]),
                "ok",
                _tail_mean(losses_np[:, k]),
                own_stats,
                draws={s: d[:, k].copy() for s, d in draws.items()},
                state=state,
                guide_params={n: _constrained(v, constraints[n]) for n, v in own.items()},
            )  # fmt: skip
        )
    return ManyResult(tuple(results), losses_np, batch.sites, tuple(int(s) for s in seeds))


def _constrained(value: torch.Tensor, constraint: Any) -> NDArray[np.float32]:
    transform = torch.distributions.transform_to(constraint)
    constrained: NDArray[np.float32] = transform(value).detach().cpu().numpy().copy()
    return constrained


def _tail_mean(losses: NDArray[np.float64], last: int = FINAL_LOSS_STEPS) -> float:
    tail = losses[-last:]
    return float(tail.mean()) if len(tail) else float("nan")
