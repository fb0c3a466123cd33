"""run_svi with mini-batches: each step's batch from a function, metrics at each epoch's end,
and a resume in the middle of an epoch that replays the batches the uninterrupted run drew."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from pyro.infer.autoguide import AutoNormal

from inference.events import Checkpoint, Event, Metric, Step
from inference.state import param_values
from inference.svi import run_svi

N, BATCH = 200, 50
Batch = tuple[tuple[Any, ...], dict[str, Any]]  # (args, kwargs) of one step


def data() -> torch.Tensor:
    return 3.0 + 2.0 * torch.randn(N, generator=torch.Generator().manual_seed(0))


def model(x: torch.Tensor, idx: torch.Tensor) -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.HalfNormal(5.0))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("obs", dist.Normal(loc, scale), obs=x[idx])


def batches(seed: int) -> Callable[[int], Batch]:
    x = data()

    def batch(step: int) -> Batch:
        epoch, position = divmod(step, N // BATCH)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        return (), {"x": x, "idx": order[position * BATCH : (position + 1) * BATCH]}

    return batch


def fit(
    steps: int, resume: bytes | None = None, every: int = 0
) -> tuple[list[Event], dict[str, NDArray[Any]]]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    events = list(run_svi(
        model, guide, (), None, steps=steps, lr=0.05, batch=batches(seed=1),
        steps_per_epoch=N // BATCH, evaluate=lambda: {"loc_now": float(guide.median()["loc"])},
        loss_items=N, resume=resume, checkpoint_every_steps=every,
    ))  # fmt: skip
    return events, param_values()


def test_metrics_come_at_each_epoch_end_with_train_elbo_per_item() -> None:
    events, _ = fit(steps=40)
    metrics = [e for e in events if isinstance(e, Metric)]
    assert [(m.name, m.step, m.epoch) for m in metrics[:2]] == [
        ("train_elbo", 4, 1), ("loc_now", 4, 1)
    ]  # fmt: skip
    assert len(metrics) == 2 * 10
    train = [m.value for m in metrics if m.name == "train_elbo"]
    losses = [e.loss for e in events if isinstance(e, Step)]
    assert train[0] == sum(losses[:4]) / 4 / N
    assert train[-1] < train[0]
    locs = [m.value for m in metrics if m.name == "loc_now"]
    assert locs[0] < locs[-1] < 3.5  # evaluate() sees the fit moving loc towards the mean, 3


def test_resume_mid_epoch_replays_the_same_batches() -> None:
    events, whole = fit(steps=30)
    partial, _ = fit(steps=30, every=6)
    checkpoint = next(e for e in partial if isinstance(e, Checkpoint) and e.step == 18)
    resumed, after = fit(steps=30, resume=checkpoint.content)
    assert [e.step for e in resumed if isinstance(e, Step)] == list(range(18, 30))
    for name in whole:
        torch.testing.assert_close(torch.as_tensor(after[name]), torch.as_tensor(whole[name]))
