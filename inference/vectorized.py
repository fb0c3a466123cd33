"""fit_many(): many independent linreg fits as one vectorised Pyro program (an outer plate)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.ops.jit
import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.poutine.util import site_is_subsample

from inference.models.linreg import LinReg
from inference.posterior import summarize_draws
from inference.state import dump_param_state
from kiln.errors import SpecError
from kiln.records import STATS, SiteStats

log = logging.getLogger(__name__)

GUIDES = ("AutoNormal",)  # guides whose parameters are per member (no coupling across members)


@dataclass(frozen=True, slots=True)
class MemberResult:
    """One member of a batch: how it ended and what its guide says about each site."""

    index: int
    seed: int
    status: str  # "ok" or "failed"
    final_loss: float  # mean loss over the last 100 steps it ran (NaN when it failed at once)
    stats: tuple[SiteStats, ...] = ()  # each site's summary, shaped as a single fit's
    reason: str | None = None
    failed_step: int | None = None
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # site -> (num_samples,)
    state: bytes | None = None  # its guide as a single fit's fitted state (inference.state)
    guide_params: dict[str, np.ndarray] = field(default_factory=dict)  # constrained, by name

    @property
    def params(self) -> dict[str, dict[str, float]]:
        """site -> {mean, sd, q05, q50, q95} (empty for a failed member)."""
        return {st.site: {n: float(getattr(st, n)) for n in STATS} for st in self.stats}


@dataclass(frozen=True, slots=True)
class ManyResult:
    """A vectorised batch: one MemberResult per member and the loss curves, (steps, members)."""

    members: tuple[MemberResult, ...]
    losses: np.ndarray  # (steps, K) float64; NaN from the step a member failed
    sites: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def ok(self) -> tuple[int, ...]:
        return tuple(m.index for m in self.members if m.status == "ok")


@dataclass(frozen=True, slots=True)
class _Priors:
    """LinReg's priors, a row per member: locs and scales (K, terms), sigma's low, high (K, 1)."""

    terms: tuple[str, ...]
    locs: torch.Tensor
    scales: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @staticmethod
    def of(
        terms: Sequence[str], priors: Sequence[Mapping[str, Mapping[str, float]] | None],
        device: str,
    ) -> _Priors:  # fmt: skip
        built: dict[str, LinReg] = {}
        models = []
        for p in priors:  # LinReg checks each prior's site names and fills in the defaults
            key = repr(sorted((p or {}).items()))
            if key not in built:
                built[key] = LinReg(terms, p, device=device)
            models.append(built[key])
        return _Priors(
            tuple(terms),
            torch.stack([m.locs for m in models]),
            torch.stack([m.scales for m in models]),
            torch.stack([m.sigma_low for m in models]).unsqueeze(-1),
            torch.stack([m.sigma_high for m in models]).unsqueeze(-1),
        )


class _BatchedLinReg:
    """LinReg's sites, with every latent of shape (K, 1) under the `members` plate, and each
    member's own priors (a prior grid packs into one batch).

    The likelihood is `pyro.factor("obs", weights * log N(y | X beta, sigma))`: a bootstrap
    resample is a row of multinomial counts, so no member needs its own copy of the data.
    (A tensor `poutine.scale` would do the same, but Pyro's validation rejects zero scales.)
    """

    def __init__(self, priors: _Priors, members: int) -> None:
        self.priors = priors
        self.members = members

    def __call__(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> None:
        p = self.priors
        with pyro.plate("members", self.members, dim=-2, device=X.device):
            mean = torch.zeros((), dtype=X.dtype, device=X.device)
            for j, term in enumerate(p.terms):
                prior = dist.Normal(p.locs[:, j : j + 1], p.scales[:, j : j + 1])
                coef = pyro.sample(term, prior)  # (K, 1)
                mean = mean + coef * X[..., j]  # (K, rows)
            sigma = pyro.sample("sigma", dist.Uniform(p.low, p.high))
            with pyro.plate("data", X.shape[-2], dim=-1, device=X.device):
                pyro.factor("obs", weights * dist.Normal(mean, sigma).log_prob(y))


def _initial_values(
    priors: _Priors, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """linreg's `init=auto` per member: weighted least squares and the weighted residual sd.

    Computed in float64; a member whose system is degenerate (all-zero weights, too few rows)
    starts at the prior's median instead.
    """
    w64 = weights.double()
    X64 = X.double().expand(w64.shape[0], *X.shape[-2:])  # (K, rows, terms)
    y64 = y.double().expand(w64.shape)  # (K, rows)
    root = w64.sqrt().unsqueeze(-1)  # (K, rows, 1)
    coef = torch.linalg.lstsq(root * X64, root * y64.unsqueeze(-1)).solution.squeeze(-1)
    resid = y64 - torch.einsum("krt,kt->kr", X64, coef)  # (K, rows)
    total = w64.sum(-1)
    centre = (w64 * resid).sum(-1) / total
    sd = ((w64 * (resid - centre.unsqueeze(-1)) ** 2).sum(-1) / (total - 1)).sqrt()
    span = (priors.high - priors.low).double().squeeze(-1)
    low = priors.low.double().squeeze(-1) + 0.01 * span
    high = priors.high.double().squeeze(-1) - 0.01 * span
    usable = torch.isfinite(coef).all(-1) & torch.isfinite(sd) & (total > 1)
    coef = torch.where(usable.unsqueeze(-1), coef, priors.locs.double())
    sd = torch.where(usable, torch.minimum(torch.maximum(sd, low), high), (low + high) / 2)
    values = {term: coef[:, j : j + 1].to(X.dtype) for j, term in enumerate(priors.terms)}
    values["sigma"] = sd.unsqueeze(-1).to(X.dtype)
    return values


def _member_losses(
    model: Any, guide: Any, args: tuple[torch.Tensor, ...], members: int
) -> torch.Tensor:
    """Per-member negative ELBO (one particle, as Trace_ELBO): shape (K,).

    Every site's log-density has the member axis first, so summing the rest of each gives
    each member's own terms; the batch loss is their sum and each member's gradient its own.
    """
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    elbo = torch.zeros(members, dtype=args[0].dtype, device=args[0].device)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            # a plate's own site (its indices) adds nothing; Pyro makes its zero on the CPU
            if site["type"] == "sample" and not site_is_subsample(site):
                log_p = torch.broadcast_to(site["log_prob"], (members, 1)) if (
                    site["log_prob"].dim() < 2
                ) else site["log_prob"]  # fmt: skip
                elbo = elbo + sign * log_p.reshape(members, -1).sum(-1)
    return -elbo


def _summaries(
    guide: autoguide.AutoNormal, args: tuple[torch.Tensor, ...], sites: Sequence[str],
    num_samples: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Draws from the guide, vectorised over an outer `draws` plate: site -> (num_samples, K)."""
    with torch.no_grad(), pyro.plate("draws", num_samples, dim=-3, device=args[0].device):
        trace = poutine.trace(guide).get_trace(*args)
    return {s: trace.nodes[s]["value"].reshape(num_samples, -1).cpu().numpy() for s in sites}


def _check(
    X: np.ndarray, y: np.ndarray, members: int, weights: np.ndarray | None, seeds: Sequence[int],
    guide: str, init: str,
) -> np.ndarray:  # fmt: skip
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


def fit_many(
    X: np.ndarray,
    y: np.ndarray,
    *,
    terms: Sequence[str],
    members: int,
    weights: np.ndarray | None,
    seeds: Sequence[int],
    steps: int,
    lr: float | Sequence[float],
    guide: str = "AutoNormal",
    priors: Mapping[str, Mapping[str, float]]
    | Sequence[Mapping[str, Mapping[str, float]] | None]
    | None = None,
    init: str = "auto",
    num_samples: int = 1000,
    device: str = "cpu",
    progress: Callable[[int, np.ndarray], None] | None = None,
    progress_every: int = 50,
    jit: bool = True,
) -> ManyResult:
    """Fit `members` independent linreg models (LinReg's priors and sites) in one program.

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
    so the other members go on untouched. `progress(step, last losses)` is called every
    `progress_every` steps (it may raise to stop the batch). Clears the param store.
    """
    w = _check(X, y, members, weights, seeds, guide, init)
    rates = np.broadcast_to(np.asarray(lr, dtype=np.float64), (members,)).copy()
    if not (np.isfinite(rates) & (rates > 0)).all():
        raise SpecError(f"lr must be > 0 for every member (got {list(rates)})", field="lr")
    per_member = priors if isinstance(priors, Sequence) else [priors] * members
    if len(per_member) != members:
        raise SpecError(f"give one set of priors per member ({members}), got {len(per_member)}",
                        field="priors")  # fmt: skip
    prior = _Priors.of(terms, per_member, device)
    sites = (*prior.terms, "sigma")
    tensor = dict(dtype=torch.float32, device=device)
    Xt, yt = torch.as_tensor(X, **tensor), torch.as_tensor(y, **tensor)
    args = (Xt, yt, torch.as_tensor(w, **tensor))
    model = _BatchedLinReg(prior, members)

    # Without validation, a member whose guide scale underflows to 0 (or whose sigma leaves
    # its support) gets a non-finite loss, which fails that member alone; with it, Pyro would
    # raise for the whole batch.
    with pyro.validation_enabled(False):
        pyro.clear_param_store()
        pyro.set_rng_seed(int(seeds[0]))
        if init == "auto":
            start = autoguide.initialization.init_to_value(
                values=_initial_values(prior, *args),
                fallback=autoguide.initialization.init_to_median,
            )
            fitted = autoguide.AutoNormal(model, init_loc_fn=start)
        else:
            fitted = autoguide.AutoNormal(model)
        with torch.no_grad():
            fitted(*args)  # makes the parameters, each (K, 1): member axis first
        params = [p for p in fitted.parameters()]
        assert all(p.shape[0] == members for p in params), "a guide parameter is shared by members"
        adam = _Adam(params, torch.as_tensor(rates, **tensor))

        def batch_loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return _member_losses(model, fitted, (X, y, w), members)

        loss_fn = _traced(batch_loss, args) if jit else batch_loss
        alive = torch.ones(members, dtype=torch.bool, device=device)
        curve = torch.full((steps, members), float("nan"), dtype=torch.float64)
        failures: dict[int, tuple[int, str]] = {}
        for step in range(steps):
            for p in params:
                p.grad = None
            losses = loss_fn(*args)
            bad = alive & ~torch.isfinite(losses)
            if bad.any():
                for k in bad.nonzero().flatten().tolist():
                    failures[k] = (step, f"loss is {losses[k].item()} at step {step}")
                alive = alive & ~bad
            torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
            grads = adam.gradients()  # (K, all parameters' elements)
            grad_ok = torch.isfinite(grads).all(-1)
            for k in (alive & ~grad_ok).nonzero().flatten().tolist():
                failures[k] = (step, f"gradient is not finite at step {step}")
            alive = alive & grad_ok
            adam.step(grads, alive)
            curve[step] = torch.where(alive, losses.detach(), torch.nan).double().cpu()
            if progress is not None and ((step + 1) % progress_every == 0 or step + 1 == steps):
                progress(step + 1, curve[step].numpy())

        draws = _summaries(fitted, args, sites, num_samples)
    saved = pyro.get_param_store().get_state()  # unconstrained values and their constraints
    unconstrained = {n: v.detach() for n, v in saved["params"].items()}
    constraints = saved["constraints"]
    losses_np = curve.numpy()
    stats = {s: summarize_draws(s, d) for s, d in draws.items()}  # each statistic (K,)
    results = []
    for k in range(members):
        if k in failures:
            step, what = failures[k]
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
    return ManyResult(tuple(results), losses_np, tuple(sites), tuple(int(s) for s in seeds))


def _traced(
    fn: Callable[..., torch.Tensor], args: tuple[torch.Tensor, ...]
) -> Callable[..., torch.Tensor]:
    """`fn` compiled once with torch.jit.trace through Pyro's parameter plumbing (a traced
    ELBO, as JitTrace_ELBO does): a step then runs one graph instead of Pyro's Python tracing
    of model and guide. The random draws are in the graph, so each call draws afresh.

    torch 2.13 marks jit.trace deprecated (it warns once, here); where tracing is not there
    or fails, `fn` itself is returned and the batch runs uncompiled, said in the log."""
    compiled = pyro.ops.jit.trace(fn, ignore_warnings=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*jit\.trace. is deprecated",
                                category=DeprecationWarning)  # fmt: skip
        try:
            compiled(*args)  # traces and compiles; its draws are thrown away
        except Exception as e:  # noqa: BLE001 - any tracing failure falls back, logged
            log.warning("the batched loss runs uncompiled: torch.jit.trace failed: %s", e)
            return fn
    return compiled


def _constrained(value: torch.Tensor, constraint: Any) -> np.ndarray:
    return torch.distributions.transform_to(constraint)(value).detach().cpu().numpy().copy()


class _Adam:
    """torch's Adam update (betas 0.9, 0.999, eps 1e-8, bias-corrected) with one learning rate
    per member, and updates only for members still alive.

    The moments are kept for all parameters at once, as (members, elements) tensors, so a
    step is a dozen tensor operations however many parameters the guide has."""

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor) -> None:
        self.params = params
        self.members = params[0].shape[0]
        self.sizes = [p[0].numel() for p in params]
        self.lr = lr.reshape(-1, 1)
        total = sum(self.sizes)
        self.m = torch.zeros((self.members, total), dtype=params[0].dtype, device=params[0].device)
        self.v = torch.zeros_like(self.m)
        self.t = 0

    def gradients(self) -> torch.Tensor:
        return torch.cat([p.grad.reshape(self.members, -1) for p in self.params], dim=1)

    @torch.no_grad()
    def step(self, grads: torch.Tensor, alive: torch.Tensor) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        live = alive.reshape(-1, 1)
        g = torch.where(live, grads, torch.zeros_like(grads))
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        update = (self.lr / c1) * self.m / (self.v.sqrt() / c2**0.5 + eps)
        update = torch.where(live, update, torch.zeros_like(update))
        parts = update.split(self.sizes, dim=1)
        torch._foreach_sub_(
            self.params, [u.reshape(p.shape) for u, p in zip(parts, self.params, strict=True)]
        )


def _tail_mean(losses: np.ndarray, last: int = 100) -> float:
    tail = losses[-last:]
    return float(tail.mean()) if len(tail) else float("nan")
