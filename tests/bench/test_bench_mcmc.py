"""Smoke tests of bench/bench_mcmc.py (issue 20): it runs end to end on a tiny job, and the
NumPyro twins are the same models as the Pyro files Kiln runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_mcmc.py"


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False)  # fmt: skip


def test_an_unknown_model_is_refused_by_name():
    done = run(str(BENCH), "--models", "nope", timeout=60)
    assert done.returncode == 2
    assert "unknown model(s) ['nope']" in done.stderr


@pytest.mark.slow
def test_the_quick_run_prints_the_kiln_job_and_its_breakdown():
    done = run(str(BENCH), "--quick", "--chains", "2", "--skip-numpyro", "--models",
               "eight_schools")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "eight_schools: NUTS, 2 chains x (100 warmup + 100 draws)" in out
    assert "Kiln job, submit --wait from a shell" in out
    assert "submit from a shell -> claimed" in out
    assert "gathering (draws, stats, diagnostics; commit)" in out
    assert "per leapfrog step while sampling" in out
    assert "NumPyro" not in out


@pytest.mark.slow
def test_the_numpyro_twins_have_the_pyro_models_log_density():
    pytest.importorskip("numpyro", reason="the optional extra: pip install -e '.[numpyro]'")
    done = run(str(ROOT / "bench" / "mcmc_numpyro.py"), "--check")
    assert done.returncode == 0, done.stderr[-3000:]
    gaps = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(gaps) == {"eight_schools", "gp_poisson"}
    assert all(gap < 1e-6 for gap in gaps.values()), gaps


@pytest.mark.slow
def test_the_scaling_run_spreads_the_chains_over_two_workers():
    done = run(str(BENCH), "--scaling", "--quick", "--chains", "2", "--models", "eight_schools")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "1 worker(s), one slot each:" in out and "1 units on bench0" in out
    assert "2 units on bench0, bench1" in out
    assert "two workers / one: " in out
