"""Fit -> predict through a real worker: stored draws, the 90% interval, exports, plots."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, cli_json, run_cli
from tests.params import EMBEDDED_AND_FLEET, FLEET_AND_API_AND_SLOW_EMBEDDED

if TYPE_CHECKING:
    from arviz import InferenceData


def submit(stack: Stack, *args: str) -> tuple[Any, subprocess.CompletedProcess[str]]:
    out = run_cli("submit", *args, "--json", env=stack.user_env)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout), out


def fit_args(*extra: str) -> list[str]:
    return ["fit", "--model", "linreg", "--data", str(RUGGED), "--formula", RUGGED_FORMULA, *extra]


def open_netcdf(path: Path) -> InferenceData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    idata: InferenceData = arviz.from_netcdf(str(path))
    return idata


# The mixed pairs add nothing here that tests/cli does not cover; the API's export and plot do.
@FLEET_AND_API_AND_SLOW_EMBEDDED
def test_fit_then_predict_800_covers_90_percent_and_exports(
    stack, via, start_worker, tmp_path
) -> None:
    start_worker("w1")
    (fit, predict), out = submit(
        stack, *fit_args("--steps", "1000", "--seed", "0", "--then-predict", "800", "--wait")
    )
    assert out.returncode == 0, out.stderr
    assert fit["status"] == predict["status"] == "succeeded"
    assert predict["kind"] == "predict" and predict["depends_on"] == fit["id"]
    info = predict["info"]
    assert info["rows"] == 170 and info["num_samples"] == 800 and info["observed"] == 170
    assert 0.80 <= info["coverage_90"] <= 0.97

    # Stored summaries: the 90% interval of obs, row by row, covers the data as said.
    rows = cli_json(stack, "samples", predict["id"], "--site", "obs", "--format", "json")
    assert [r["site"] for r in rows] == [f"obs[{i}]" for i in range(170)]
    assert all(r["kind"] == "predictive" and r["q05"] < r["q50"] < r["q95"] for r in rows)

    # The raw draws are there too: 800 x 170.
    raw = run_cli("samples", predict["id"], "--site", "obs", "--raw", env=stack.user_env)
    assert raw.returncode == 0, raw.stderr
    lines = raw.stdout.splitlines()
    assert lines[0].split(",")[:3] == ["draw", "obs[0]", "obs[1]"] and len(lines) == 801
    draws = np.loadtxt(lines[1:], delimiter=",")[:, 1:]
    assert draws.shape == (800, 170)

    # ArviZ opens the export; its posterior means are `jobs params` of the predict job.
    path = tmp_path / "rugged.nc"
    done = run_cli(
        "export", predict["id"], "--format", "netcdf", "-o", str(path), env=stack.user_env
    )
    assert done.returncode == 0, done.stderr
    idata = open_netcdf(path)
    for group in ("posterior", "posterior_predictive", "observed_data", "constant_data", "loss"):
        assert group in idata.groups(), idata.groups()
    params = cli_json(stack, "params", predict["id"], "--format", "json")
    for row in params:
        # in float64, as the stored summary is: a float32 mean over 800 draws of a value near 9
        # can be 1e-6 off by rounding alone
        drawn = idata["posterior"][row["site"]].astype("float64")
        assert float(drawn.mean()) == pytest.approx(row["mean"], abs=1e-6)
    fit_params = cli_json(stack, "params", fit["id"], "--format", "json")
    for a, b in zip(params, fit_params, strict=True):
        assert a["site"] == b["site"] and abs(a["mean"] - b["mean"]) < 0.05
    assert idata["posterior_predictive"]["obs"].shape == (1, 800, 170)
    assert np.allclose(idata["posterior_predictive"]["obs"].values[0], draws, atol=1e-6)
    observed = idata["observed_data"]["obs"].values
    inside = (observed >= np.quantile(draws, 0.05, axis=0)) & (
        observed <= np.quantile(draws, 0.95, axis=0)
    )
    assert inside.mean() == pytest.approx(info["coverage_90"])
    assert idata["loss"]["loss"].shape == (1000,)
    assert idata["posterior"].attrs["kiln_fit_id"] == fit["id"]

    # The tutorial's figure, from stored draws only.
    png = tmp_path / "predictive.png"
    drawn = run_cli(
        "plot", predict["id"], "--kind", "predictive", "-o", str(png), env=stack.user_env
    )
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@EMBEDDED_AND_FLEET
def test_predict_submitted_while_the_fit_is_queued_waits_for_it(stack, start_worker) -> None:
    fit, _ = submit(stack, *fit_args("--steps", "200", "--seed", "1"))
    predict, _ = submit(stack, "predict", "--from", fit["id"], "--samples", "100", "--seed", "2")
    assert predict["status"] == "waiting"
    start_worker("w1")  # only now can anything run
    done = run_cli("watch", predict["id"], env=stack.env, timeout=240)
    assert done.returncode == 0, done.stderr
    shown = json.loads(run_cli("show", predict["id"], "--json", env=stack.env).stdout)
    assert shown["status"] == "succeeded"
    fit_shown = json.loads(run_cli("show", fit["id"], "--json", env=stack.env).stdout)
    assert shown["started_at"] >= fit_shown["finished_at"]


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@EMBEDDED_AND_FLEET
def test_out_of_sample_rows_and_seeded_repeat(stack, start_worker, tmp_path) -> None:
    fitter = start_worker("w1")
    fit, out = submit(stack, *fit_args("--steps", "300", "--seed", "4", "--wait"))
    assert out.returncode == 0, out.stderr
    fitter.stop()  # the fitting process is gone: predictions come from the stored state only
    start_worker("w2")
    new = tmp_path / "new.csv"
    new.write_text("country,cont_africa,rugged\nA,1,0.5\nB,1,4.0\nC,0,0.5\nD,0,\n")
    runs = [
        submit(stack, "predict", "--from", fit["id"], "--data", str(new), "--samples", "400",
               "--seed", "9", "--wait")[0]
        for _ in range(2)
    ]  # fmt: skip
    assert all(r["status"] == "succeeded" for r in runs)
    assert {a["worker"] for r in runs for a in r["attempt_log"]} == {"w2"}
    assert runs[0]["info"]["rows"] == 3 and runs[0]["info"]["rows_dropped"] == 1
    assert runs[0]["info"]["coverage_90"] is None  # no response in the new rows
    a, b = (
        json.loads(run_cli("samples", r["id"], "--site", "mean", "--format", "json",
                           env=stack.env).stdout)
        for r in runs
    )  # fmt: skip
    assert a == b  # same fit, same seed: same draws
    # Africa: ruggedness raises GDP; elsewhere it lowers it (the tutorial's finding).
    assert a[1]["mean"] > a[0]["mean"]
    path = tmp_path / "new.nc"
    assert run_cli("export", runs[0]["id"], "-o", str(path), env=stack.env).returncode == 0
    idata = open_netcdf(path)
    assert "predictions" in idata.groups() and "posterior_predictive" not in idata.groups()
    assert list(idata["predictions"]["row"].values) == [0, 1, 2]
    png = tmp_path / "new.png"
    assert run_cli("plot", runs[0]["id"], "-o", str(png), env=stack.env).returncode == 0
