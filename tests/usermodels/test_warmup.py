"""Warmup draws of a user's NUTS fit: kept with keep_warmup (`--keep-warmup`), stored
chain-major beside the posterior, exported on request as ArviZ's warmup_posterior
(`jobs export --warmup`), and refused with what to do for a fit that did not keep them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.errors import SpecError
from tests.conftest import Stack, offline_client, run_cli, run_in_process
from tests.params import FLEET_AND_SLOW_EMBEDDED

MODEL = """
import pyro
import pyro.distributions as dist
import torch


def line(x, y=None):
    a = pyro.sample("a", dist.Normal(torch.zeros(()), 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones(())))
    pyro.deterministic("twice", 2 * a)
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(a + x, sigma), obs=y)
"""
_X = np.linspace(-1, 1, 10)
DATA = {"x": _X.tolist(), "y": (3.0 + _X + 0.2 * np.random.default_rng(3).normal(size=10)).tolist()}
NUTS: dict[str, Any] = {"method": "nuts", "chains": 2, "warmup": 30, "samples": 30, "seed": 4,
                        "jit": "off"}  # fmt: skip


def fitted(stack: Stack, tmp_path: Path, **options: Any) -> str:
    path = tmp_path / "line.py"
    path.write_text(MODEL)
    kiln = offline_client(stack)
    job_id = kiln.submit_model(path, DATA, function="line", **NUTS, **options)
    assert run_in_process(stack, job_id) == "succeeded", kiln.job(job_id)["error"]
    return job_id


@FLEET_AND_SLOW_EMBEDDED
def test_a_nuts_fit_that_keeps_warmup_exports_it_as_warmup_posterior(
    stack: Stack, tmp_path: Path
) -> None:
    import xarray as xr

    kiln = offline_client(stack)
    job_id = fitted(stack, tmp_path, keep_warmup=True)
    assert kiln.job(job_id)["spec"]["keep_warmup"] is True
    stored = kiln.draws(job_id, sites=["warmup:a", "warmup:sigma", "warmup:twice"])
    assert {k: v.shape for k, v in stored.items()} == {
        "warmup:a": (60,), "warmup:sigma": (60,), "warmup:twice": (60,)}  # fmt: skip
    idata = kiln.inference_data(job_id, warmup=True)
    warm = idata["warmup_posterior"]
    assert warm["a"].shape == (2, 30) and warm["twice"].shape == (2, 30)
    assert idata["posterior"]["a"].shape == (2, 30)
    # Constrained like the posterior (a HalfNormal's draws are positive), deterministic sites
    # replayed per draw, and the draws before adaptation ended, not the kept ones again.
    assert bool((warm["sigma"] > 0).all())
    np.testing.assert_allclose(warm["twice"], 2 * warm["a"], rtol=1e-6)
    assert not np.allclose(warm["a"].to_numpy(), idata["posterior"]["a"].to_numpy())
    assert "warmup_posterior" not in kiln.inference_data(job_id).groups()
    assert "warmup:a" not in kiln.inference_data(job_id)["posterior"]

    out = tmp_path / "fit.nc"
    done = run_cli("export", job_id, "--warmup", "-o", str(out), env=stack.user_env)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out, group="warmup_posterior") as group:
        np.testing.assert_array_equal(group["a"].to_numpy(), warm["a"].to_numpy())
    csv = run_cli("export", job_id, "--warmup", "-o", str(tmp_path / "f.csv"), env=stack.user_env)
    assert csv.returncode == 2 and "export netcdf" in csv.stderr, csv.stderr
    assert not (tmp_path / "f.csv").exists()


@FLEET_AND_SLOW_EMBEDDED
def test_asking_for_warmup_a_fit_did_not_keep_says_to_resubmit_with_keep_warmup(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    job_id = fitted(stack, tmp_path)
    assert not [s for s in kiln.sample_summaries(job_id) if s.kind == "warmup"]
    with pytest.raises(SpecError, match="resubmit the fit with `--method nuts --keep-warmup`"):
        kiln.inference_data(job_id, warmup=True)
    out = tmp_path / "fit.nc"
    refused = run_cli("export", job_id, "--warmup", "-o", str(out), env=stack.user_env)
    assert refused.returncode == 2 and "--keep-warmup" in refused.stderr, refused.stderr
    assert not out.exists()
