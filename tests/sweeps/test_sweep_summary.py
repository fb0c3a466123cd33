"""`jobs sweep show --by`: members grouped by settings, with mean and sd across each group's
succeeded members; the same numbers from the Client as a DataFrame; unknown keys refused with
the close ones named."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kiln.errors import SpecError
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import FLEET_AND_SLOW_EMBEDDED


def member(index: int, status: str, loss: float | None, rugged: float | None,
           **settings: Any) -> Any:  # fmt: skip
    from db.sweeps import MemberRow

    params = {} if rugged is None else {"rugged": rugged, "sigma": 1.0}
    return MemberRow(index=index, job_id=f"j{index}", batch_id=None, settings=settings,
                     status=status, step=0, total_steps=10, final_loss=loss, error=None,
                     params=params)  # fmt: skip


def view_of(*members: Any) -> Any:
    from db.sweeps import SweepView

    return SweepView(id="s1", model="linreg", spec={}, info={}, created_at=None,
                     status="failed", counts={}, batches=[], members=list(members))  # fmt: skip


def test_groups_take_mean_and_sd_over_their_succeeded_members_only() -> None:
    from kiln.sweepsummary import summarise_sweep

    view = view_of(
        member(0, "succeeded", 10.0, -0.2, lr=0.01, seed=1),
        member(1, "succeeded", 14.0, -0.4, lr=0.01, seed=2),
        member(2, "failed", None, None, lr=0.01, seed=3),
        member(3, "succeeded", 20.0, 0.5, lr=0.02, seed=1),
    )
    groups = summarise_sweep(view, ["lr"])
    assert groups.columns == ["lr", "members", "succeeded", "final_loss.mean", "final_loss.sd",
                              "rugged.mean", "rugged.sd", "sigma.mean", "sigma.sd"]  # fmt: skip
    first, second = (dict(zip(groups.columns, row, strict=True)) for row in groups.rows)
    assert (first["lr"], first["members"], first["succeeded"]) == (0.01, 3, 2)
    assert first["final_loss.mean"] == 12.0
    assert first["final_loss.sd"] == pytest.approx(statistics.stdev([10.0, 14.0]))
    assert first["rugged.mean"] == pytest.approx(-0.3)
    assert first["sigma.sd"] == 0.0
    # one succeeded member: a mean, but no sd
    assert (second["members"], second["rugged.mean"], second["rugged.sd"]) == (1, 0.5, None)
    assert groups.to_dict()["groups"][1]["lr"] == 0.02


def test_an_unknown_or_repeated_key_is_refused_naming_the_close_one() -> None:
    from kiln.sweepsummary import parse_by, summarise_sweep

    view = view_of(member(0, "succeeded", 1.0, 0.1, lr=0.01, guide="AutoNormal", seed=1))
    with pytest.raises(SpecError, match=r"--by `lrr`: not a setting of this sweep's members; "
                       r"did you mean `lr`\? \(have: lr, guide, seed\)"):  # fmt: skip
        summarise_sweep(view, ["lrr"])
    with pytest.raises(SpecError, match="names `lr` twice"):
        summarise_sweep(view, ["lr", "lr"])
    with pytest.raises(SpecError, match="write KEY,KEY"):
        parse_by("lr,,guide")
    assert parse_by(" lr , guide") == ["lr", "guide"]


def jobs(stack: Stack, *args: str) -> Result:
    from kiln.cli import get_cli

    env = {"KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url}
    return CliRunner().invoke(get_cli(), list(args), env=env)


@FLEET_AND_SLOW_EMBEDDED
def test_sweep_show_by_summarises_seeds_per_grid_point_as_the_client_does(
    stack: Stack,
) -> None:
    client = offline_client(stack)
    done = client.submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01, 0.03]},
                               sweep={"seeds": 3, "seed": 4}, steps=40,
                               num_samples=20)  # fmt: skip
    for job_id in done.batches or done.members:
        assert run_in_process(stack, job_id) == "succeeded"
    members = json.loads(jobs(stack, "sweep", "show", done.sweep_id, "--json").stdout)["members"]
    shown = jobs(stack, "sweep", "show", done.sweep_id, "--by", "lr", "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["by"] == ["lr"] and [g["lr"] for g in doc["groups"]] == [0.01, 0.03]
    for group in doc["groups"]:
        mine = [m for m in members if m["settings"]["lr"] == group["lr"]]
        assert group["members"] == group["succeeded"] == 3
        rugged = [m["params"]["rugged"] for m in mine]
        assert group["rugged.mean"] == pytest.approx(statistics.fmean(rugged))
        assert group["rugged.sd"] == pytest.approx(statistics.stdev(rugged))
        losses = [m["final_loss"] for m in mine]
        assert group["final_loss.sd"] == pytest.approx(statistics.stdev(losses))
        assert group["rugged.sd"] > 0  # seeds differ
    frame = client.sweep_summary(done.sweep_id, by=["lr"])
    assert list(frame["lr"]) == [0.01, 0.03]
    assert list(frame["rugged.mean"]) == [g["rugged.mean"] for g in doc["groups"]]
    table = jobs(stack, "sweep", "show", done.sweep_id, "--by", "lr")
    assert table.exit_code == 0 and "rugged.mean" in table.stdout
    bad = jobs(stack, "sweep", "show", done.sweep_id, "--by", "seeds")
    assert bad.exit_code == 2 and "did you mean `seed`?" in bad.output
