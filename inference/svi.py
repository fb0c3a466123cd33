"""run_svi(): the SVI step loop as a generator of events. The caller owns the loop."""

from __future__ import annotations

import inspect
import math
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pyro
import pyro.infer
import pyro.optim
import pyro.poutine
import pyro.util
import torch

from inference import checkpoint
from inference.events import Checkpoint, Event, Finished, Metric, Started, Step
from kiln.errors import KilnError, ModelError, SpecError

FINAL_LOSS_STEPS = 100  # a fit's final_loss: the mean loss of its last this many steps

_ELBOS: dict[str, type[pyro.infer.ELBO]] = {
    "Trace_ELBO": pyro.infer.Trace_ELBO,
    "TraceEnum_ELBO": pyro.infer.TraceEnum_ELBO,
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
        return pyro.optim.PyroOptim(torch.optim.Adam, {"lr": lr})  # what pyro.optim.Adam makes
    if name == "ClippedAdam":
        return pyro.optim.ClippedAdam({"lr": lr})
    raise SpecError(f"unknown optimiser `{name}` (have: Adam, ClippedAdam)", field="optim")


def _first_lines(error: BaseException, lines: int = 6) -> str:
    text = str(error).strip().splitlines()
    return "\n".join(text[:lines]) if text else type(error).__name__


def _due(done: int, steps: int, every_steps: int, every_s: float, since: float) -> bool:
    if done >= steps:
        return False  # the end stores the fitted state instead
    by_steps = every_steps > 0 and done % every_steps == 0
    return by_steps or (every_s > 0 and time.monotonic() - since >= every_s)


def _restore(
    resume: bytes, svi: pyro.infer.SVI, loss_fn: pyro.infer.ELBO, args: tuple[Any, ...],
    kwargs: dict[str, Any], device: str,
) -> int:  # fmt: skip
    """Put a checkpoint's state back; returns the step to take next.

    Order matters for same-seed equality: the guide's parameters are bound to the stored
    values and a traced ELBO is compiled first (both draw random numbers), then the
    optimiser state and the RNG state are put back, so the next step draws what the
    uninterrupted run drew.
    """
    state = checkpoint.load(resume, map_location=device)
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state.param_store)
    if isinstance(loss_fn, pyro.infer.JitTrace_ELBO):
        loss_fn.loss_and_surrogate_loss(svi.model, svi.guide, *args, **kwargs)
    elif isinstance(loss_fn, pyro.infer.JitTraceMeanField_ELBO):
        loss_fn.differentiable_loss(svi.model, svi.guide, *args, **kwargs)
    else:
        with torch.no_grad(), pyro.poutine.block():
            svi.guide(*args, **kwargs)
    svi.optim.set_state(state.optim)
    if state.rng:  # a continued fit's start may leave it out: its own seed draws then
        pyro.util.set_rng_state(state.rng)
    return state.step


def _epoch_metrics(
    done: int, epoch: int, losses: list[float], items: int,
    evaluate: Callable[..., dict[str, float]] | None,
) -> Iterator[Metric]:  # fmt: skip
    """An epoch's metrics; an epoch partly replayed after a resume reports what it saw."""
    if losses:
        yield Metric("train_elbo", done, sum(losses) / len(losses) / max(items, 1), epoch)
    if evaluate is not None:
        takes_epoch = "epoch" in inspect.signature(evaluate).parameters
        try:
            with torch.no_grad():
                values = evaluate(epoch=epoch) if takes_epoch else evaluate()
        except KilnError:
            raise
        except Exception as e:
            raise ModelError(f"evaluating epoch {epoch} raised {type(e).__name__}: {e}") from e
        for name, value in values.items():
            yield Metric(name, done, float(value), epoch)


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
    resume: bytes | None = None,
    checkpoint_every_steps: int = 0,
    checkpoint_every_s: float = 0.0,
    batch: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    steps_per_epoch: int = 0,
    evaluate: Callable[..., dict[str, float]] | None = None,
    loss_items: int = 1,
    max_plate_nesting: int | None = None,
) -> Generator[Event, None, None]:
    """Run `steps` SVI steps of `model`/`guide` on `args`, yielding Started, Step...,
    Checkpoint (every `checkpoint_every_steps` steps or `checkpoint_every_s` seconds, 0: never)
    and Finished.

    The caller sets the seed and clears the param store first. `resume` (bytes of a
    Checkpoint event) goes on from where that checkpoint was taken. Raises ModelError (never
    retried) when the model raises or the loss is not finite.

    Mini-batches: `batch(step)` gives each step's (args, kwargs) instead of `args`/`kwargs`.
    With `steps_per_epoch`, each epoch's end yields Metric `train_elbo` (the epoch's mean loss
    over `loss_items`) and whatever `evaluate()` returns, before any checkpoint of that step.
    """
    kwargs = kwargs or {}
    options: dict[str, Any] = {"ignore_jit_warnings": True} if elbo.startswith("Jit") else {}
    if max_plate_nesting is not None:
        options["max_plate_nesting"] = max_plate_nesting
    loss_fn = _ELBOS[elbo](**options)
    svi = pyro.infer.SVI(model, guide, make_optim(optim, lr), loss=loss_fn)

    def inputs(step: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return batch(step) if batch is not None else (args, kwargs)

    first = _restore(resume, svi, loss_fn, *inputs(0), device) if resume else 0
    yield Started(elbo=elbo, device=device, total=steps, first_step=first)
    loss = math.nan
    since = time.monotonic()
    epoch_losses: list[float] = []
    recent: deque[float] = deque(maxlen=FINAL_LOSS_STEPS)  # for Finished.final_loss
    for step in range(first, steps):
        step_args, step_kwargs = inputs(step)
        try:
            loss = svi.step(*step_args, **step_kwargs)
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
        recent.append(loss)
        if steps_per_epoch:
            epoch_losses.append(loss)
            if (step + 1) % steps_per_epoch == 0:
                epoch = (step + 1) // steps_per_epoch
                yield from _epoch_metrics(step + 1, epoch, epoch_losses, loss_items, evaluate)
                epoch_losses = []
        if _due(step + 1, steps, checkpoint_every_steps, checkpoint_every_s, since):
            yield Checkpoint(step + 1, checkpoint.capture(step + 1, svi.optim))
            since = time.monotonic()
    # The mean of the last steps, as a vectorised sweep member's (inference.vectorized): one
    # step's loss is noisy, so sweeps and single fits compare on the same, steadier figure.
    yield Finished(steps=steps, final_loss=sum(recent) / len(recent) if recent else loss)
