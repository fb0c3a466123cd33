"""run_svi(): the SVI step loop as a generator of events. The caller owns the loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.infer
import pyro.optim

from inference.events import Event, Finished, Started, Step
from kiln.errors import KilnError, ModelError, SpecError

_ELBOS: dict[str, type[pyro.infer.ELBO]] = {
    "Trace_ELBO": pyro.infer.Trace_ELBO,
    "JitTrace_ELBO": pyro.infer.JitTrace_ELBO,
    "TraceMeanField_ELBO": pyro.infer.TraceMeanField_ELBO,
    "JitTraceMeanField_ELBO": pyro.infer.JitTraceMeanField_ELBO,
}


def resolve_elbo(name: str, jit_safe: bool) -> str:
    """`auto` becomes JitTrace_ELBO for JIT-safe models and Trace_ELBO otherwise."""
    if name == "auto":
        return "JitTrace_ELBO" if jit_safe else "Trace_ELBO"
    if name not in _ELBOS:
        raise SpecError(f"unknown ELBO `{name}` (have: auto, {', '.join(_ELBOS)})", field="elbo")
    return name


def make_optim(name: str, lr: float) -> pyro.optim.PyroOptim:
    if name == "Adam":
        return pyro.optim.Adam({"lr": lr})
    if name == "ClippedAdam":
        return pyro.optim.ClippedAdam({"lr": lr})
    raise SpecError(f"unknown optimiser `{name}` (have: Adam, ClippedAdam)", field="optim")


def _first_lines(error: BaseException, lines: int = 6) -> str:
    text = str(error).strip().splitlines()
    return "\n".join(text[:lines]) if text else type(error).__name__


def run_svi(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    *,
    steps: int,
    lr: float,
    optim: str = "Adam",
    elbo: str = "Trace_ELBO",
    device: str = "cpu",
) -> Iterator[Event]:
    """Run `steps` SVI steps of `model`/`guide` on `args`, yielding Started, Step..., Finished.

    The caller sets the seed and clears the param store first. Raises ModelError (never
    retried) when the model raises or the loss is not finite.
    """
    kwargs = kwargs or {}
    loss_fn = _ELBOS[elbo](ignore_jit_warnings=True) if elbo.startswith("Jit") else _ELBOS[elbo]()
    svi = pyro.infer.SVI(model, guide, make_optim(optim, lr), loss=loss_fn)
    yield Started(elbo=elbo, device=device, total=steps)
    loss = math.nan
    for step in range(steps):
        try:
            loss = svi.step(*args, **kwargs)
        except KilnError:
            raise
        except Exception as e:
            raise ModelError(
                f"the model raised {type(e).__name__} at step {step}: {_first_lines(e)}", step=step
            ) from e
        if not math.isfinite(loss):
            raise ModelError(
                f"loss is {loss} at step {step}; try a smaller --lr (now {lr}) or other priors",
                step=step,
            )
        yield Step(step=step, total=steps, loss=loss)
    yield Finished(steps=steps, final_loss=loss)
