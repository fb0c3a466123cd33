"""Issue 19's scenario on PostgreSQL + Redis, as a user runs it from a shell and then from a
notebook-style script: a tagged sweep and named fits, found by a `--where` with OR and a
posterior-summary comparison, compared by `kiln compare` (LOO as `arviz.loo` gives it on the
exports), a fit continued into one 2000-step curve, and `kiln logs` showing a model's print."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, cli_json, run_cli

FLEET = pytest.mark.parametrize(
    ("db_url", "broker_url"),
    [pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
    ids=["postgres-redis"],
)

PRINTING_MODEL = """
import pyro
import pyro.distributions as dist
import torch


def model(x, y=None):
    print("model sees", len(x), "rows")
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)
"""


def kiln(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, env=stack.user_env, timeout=timeout)
    assert done.returncode == 0, f"kiln {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def fit_args(*more: str) -> list[str]:
    return ["submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
            RUGGED_FORMULA, "--seed", "1", *more]  # fmt: skip


@pytest.mark.slow
@FLEET
def test_find_compare_continue_and_read_logs_from_the_shell_and_from_python(
    stack: Stack, start_worker, tmp_path: Path
) -> None:
    import arviz as az

    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    start_worker("w1", "cpu,cpu.user")
    # a tagged sweep and two named fits
    sweep = cli_json(stack, "submit", "sweep", "--model", "linreg", "--data", str(RUGGED),
                     "--formula", RUGGED_FORMULA, "--grid", "lr=0.01,0.03", "--seeds", "2",
                     "--steps", "300", "--name", "lr-grid", "--tag", "study=rugged",
                     "--json")  # fmt: skip
    normal = cli_json(stack, *fit_args("--steps", "1000", "--name", "fit-normal",
                                       "--tag", "study=guides", "--wait", "--json"))  # fmt: skip
    mvn = cli_json(stack, *fit_args("--steps", "1000", "--guide", "AutoMultivariateNormal",
                                    "--name", "fit-mvn", "--tag", "study=guides", "--wait",
                                    "--json"))  # fmt: skip
    assert normal["status"] == mvn["status"] == "succeeded"
    kiln(stack, "sweep", "show", "lr-grid")
    waited = run_cli("sweep", "show", "lr-grid", "--json", env=stack.user_env)
    assert waited.returncode == 0, waited.stderr
    _wait_for_sweep(stack, sweep["id"])

    # found by a --where with OR and a posterior-summary comparison
    found = cli_json(stack, "list", "--where",
                     "(name = 'fit-mvn' OR (tag.study = 'rugged' AND spec.lr > 0.02))"
                     " AND params.rugged.mean < 0", "--order-by", "created", "--json")  # fmt: skip
    members = cli_json(stack, "sweep", "show", sweep["id"], "--json")["members"]
    fast = {m["job_id"] for m in members if m["settings"]["lr"] == 0.03}
    assert {j["id"] for j in found} == {mvn["id"], *fast}
    assert all("name" in j for j in found)

    # compared by LOO, as arviz.loo gives it on the exports
    ranked = cli_json(stack, "compare", "fit-normal", "fit-mvn", "--json")
    assert {e["id"] for e in ranked} == {normal["id"], mvn["id"]}
    assert sorted(e["rank"] for e in ranked) == [0, 1]
    for entry in ranked:
        path = tmp_path / f"{entry['id']}.nc"
        kiln(stack, "export", entry["id"], "-o", str(path))
        with warnings.catch_warnings():  # a Pareto k over 0.7: kiln compare counts those
            warnings.simplefilter("ignore", UserWarning)
            loo = az.loo(az.from_netcdf(path))
        assert abs(float(loo.elpd_loo) - entry["elpd_loo"]) < 0.1
        assert abs(float(loo.se) - entry["se"]) < 0.1

    # continued: 1000 more steps carry on the step numbers, one curve of 2000 losses
    more = cli_json(stack, "submit", "fit", "--continue", "fit-normal", "--steps", "1000",
                    "--wait", "--json")  # fmt: skip
    assert more["status"] == "succeeded" and more["continued_from"] == normal["id"]
    curve = cli_json(stack, "losses", more["id"], "--lineage", "--format", "json")
    assert [row["step"] for row in curve] == list(range(2000))
    seam = [row["loss"] for row in curve[990:1010]]
    assert max(seam) < 3 * min(seam)  # no jump back to the start's loss at the seam

    # a model's print, kept with its job
    model = tmp_path / "line.py"
    model.write_text(PRINTING_MODEL)
    data = tmp_path / "line.json"
    data.write_text(json.dumps({"x": [0.0, 1.0, 2.0, 3.0], "y": [0.1, 1.1, 1.9, 3.2]}))
    own = cli_json(stack, "submit", "fit", "--model", f"{model}:model", "--data", str(data),
                   "--steps", "20", "--wait", "--json")  # fmt: skip
    assert own["status"] == "succeeded"
    assert "model sees 4 rows" in kiln(stack, "logs", own["id"]).stdout

    # the same from a notebook-style script, through the Client
    script = tmp_path / "notebook.py"
    script.write_text(
        textwrap.dedent("""
        import json
        import pyro
        import pyro.distributions as dist
        from kiln import Client

        def line(x, y=None):
            print("notebook model", len(x))
            a = pyro.sample("a", dist.Normal(0.0, 10.0))
            b = pyro.sample("b", dist.Normal(0.0, 10.0))
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y)

        with Client() as kiln:
            found = kiln.search("tag.study = 'guides' OR name = 'lr-grid'", order_by="created")
            compared = kiln.compare(["fit-normal", "fit-mvn"])
            own = kiln.submit_model(line, {"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.1]},
                                    steps=20, name="notebook-line", tags={"study": "nb"})
            kiln.wait(own)
            more = kiln.continue_fit("fit-mvn", steps=200)
            kiln.wait(more)
            print(json.dumps({
                "found": sorted(found["id"]), "compared": sorted(compared.index),
                "own": kiln.job("notebook-line")["status"], "tags": kiln.job(own)["tags"],
                "logs": kiln.logs(own), "more": kiln.job(more)["continued_from"],
            }))
    """)
    )
    done = subprocess.run([sys.executable, str(script)], env=stack.user_env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["found"] == sorted([normal["id"], mvn["id"]])
    assert result["compared"] == sorted([normal["id"], mvn["id"]])
    assert result["own"] == "succeeded" and result["tags"] == {"study": "nb"}
    assert "notebook model 3" in result["logs"]
    assert result["more"] == mvn["id"]


def _wait_for_sweep(stack: Stack, sweep_id: str) -> None:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        view = cli_json(stack, "sweep", "show", sweep_id, "--json")
        if view["status"] in ("succeeded", "failed", "cancelled"):
            assert view["status"] == "succeeded", view
            return
        time.sleep(1)
    raise AssertionError(f"sweep {sweep_id} did not end")
