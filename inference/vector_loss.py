"""The batched loss (each member's negative ELBO, compiled once with torch.jit.trace) and the
Adam update with one learning rate per member."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import pyro
import pyro.ops.jit
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

log = logging.getLogger(__name__)


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


def _traced(
    fn: Callable[..., torch.Tensor], args: tuple[torch.Tensor, ...]
) -> Callable[..., torch.Tensor]:
    """`fn` compiled once with torch.jit.trace through Pyro's parameter plumbing (a traced
    ELBO, as JitTrace_ELBO does): a step then runs one graph instead of Pyro's Python tracing
    of model and guide. The random draws are in the graph, so each call draws afresh.

    torch 2.13 marks jit.trace deprecated (it warns once, here); where tracing is not there
    or fails, `fn` itself is returned and the batch runs uncompiled, said in the log."""
    compiled = cast(Callable[..., torch.Tensor], pyro.ops.jit.trace(fn, ignore_warnings=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*jit\.trace. is deprecated",
                                category=DeprecationWarning)  # fmt: skip
        try:
            compiled(*args)  # traces and compiles; its draws are thrown away
        except Exception as e:  # noqa: BLE001 - any tracing failure falls back, logged
            log.warning("the batched loss runs uncompiled: torch.jit.trace failed: %s", e)
            return fn
    return compiled


class _Adam:
    """torch's Adam update (betas 0.9, 0.999, eps 1e-8, bias-corrected) with one learning rate
    per member, and updates only for members still alive.

    The moments are kept for all parameters at once, as (members, elements) tensors, so a
    step is a dozen tensor operations however many parameters the guide has."""

    def __init__(self, params: Sequence[torch.Tensor], lr: torch.Tensor) -> None:
        self.params = list(params)
        self.members = params[0].shape[0]
        self.sizes = [p[0].numel() for p in params]
        self.lr = lr.reshape(-1, 1)
        total = sum(self.sizes)
        self.m = torch.zeros((self.members, total), dtype=params[0].dtype, device=params[0].device)
        self.v = torch.zeros_like(self.m)
        self.t = 0

    def state(self) -> dict[str, Any]:
        """The moments and the step count, for a checkpoint (copies)."""
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what state() gave; the moments keep this optimiser's device and dtype."""
        m, v = state["m"], state["v"]
        if tuple(m.shape) != tuple(self.m.shape) or tuple(v.shape) != tuple(self.v.shape):
            raise ValueError(f"Adam moments of shape {tuple(m.shape)} do not fit "
                             f"{tuple(self.m.shape)}")  # fmt: skip
        self.m.copy_(m)
        self.v.copy_(v)
        self.t = int(state["t"])

    def gradients(self) -> torch.Tensor:
        """Every parameter's gradient as one (members, elements) tensor."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise RuntimeError("a guide parameter has no gradient: call backward() first")
        return torch.cat([cast(torch.Tensor, g).reshape(self.members, -1) for g in grads], dim=1)

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
        parts = torch.split(update, self.sizes, dim=1)
        torch._foreach_sub_(
            self.params, [u.reshape(p.shape) for u, p in zip(parts, self.params, strict=True)]
        )
