"""Formulas are a grammar, not Python: a hostile formula is refused by name wherever a design is
built (the submitter, the worker, a reader's export), and no code in it ever runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from db.models import Dataset, Job
from kiln.cli import BAD_INPUT, get_cli
from kiln.errors import SpecError
from kiln.formula import check_formula
from kiln.tables import build_design, read_csv_bytes
from tests.conftest import (
    EMBEDDED_AND_FLEET,
    RUGGED,
    RUGGED_FORMULA,
    Stack,
    offline_client,
    run_in_process,
)

ADMITTED = [
    RUGGED_FORMULA,
    "rgdppc_2000 ~ rugged",
    "np.log(rgdppc_2000) ~ I(rugged ** 2) + C(cont_africa)",
    "log(rgdppc_2000) ~ center(rugged) + scale(rugged) - 1",
    "log1p(rgdppc_2000) ~ 0 + sqrt(abs(rugged)) + exp(rugged / 10)",
    "log(rgdppc_2000) ~ cont_africa + rugged + cont_africa:rugged",
    "log(rgdppc_2000) ~ (cont_africa + rugged) ^ 2",
]


def attacks(marker: Path) -> list[tuple[str, str]]:
    """(formula, what the refusal names): each would run code or reach a file if evaluated."""
    touch = f"__import__('os').system('touch {marker}')"
    return [
        (
            f"rgdppc_2000 ~ {{rugged*0 + np.__builtins__['__import__']('os').system('touch"
            f" {marker}')}}",
            "`{` is not allowed",
        ),
        (f"rgdppc_2000 ~ {touch}", "`__import__` is not allowed"),
        (f"rgdppc_2000 ~ np.savetxt('{marker}', rugged)", "`np.savetxt` is not an allowed"),
        (f"rgdppc_2000 ~ np.fromfile('{marker}')", "`np.fromfile` is not an allowed"),
        ("rgdppc_2000 ~ rugged.__class__", "`rugged.` (attribute or subscript)"),
        ("rgdppc_2000 ~ rugged[0]", "`rugged[` (attribute or subscript)"),
        (f"rgdppc_2000 ~ (lambda: {touch})()", "`lambda` is not allowed"),
        (f"rgdppc_2000 ~ open('{marker}', 'w')", "`open(...)` is not an allowed transform"),
        ("rgdppc_2000 ~ eval('1')", "`eval(...)` is not an allowed transform"),
        ("rgdppc_2000 ~ getattr(rugged, 'real')", "`getattr(...)` is not an allowed"),
        ("rgdppc_2000 ~ C(rugged, levels=[1])", "`levels=` (a keyword argument)"),
        ("rgdppc_2000 ~ 'rugged'", "a string is not allowed"),
        ("rgdppc_2000 ~ `rugged`", "a backtick-quoted name"),
        ("rgdppc_2000 ~ np", "`np` is not allowed"),
        ("rgdppc_2000 ~ np.log.__self__", "`np.log` is not an allowed transform"),
        ("rgdppc_2000 ~ rugged if rugged else 1", "`if` is not allowed"),
        ("rgdppc_2000 ~ 0x10", "`0x10` is not a plain number"),
        ("rgdppc_2000 ~ 1e999", "`1e999` is not a plain number"),
        ("rgdppc_2000 ~ rugged % 2", "`%` is not allowed"),
        ("rgdppc_2000 ~ rugged\n+ cont_africa", "it spans lines"),
        ("rgdppc_2000 ~ " + " + ".join(["rugged"] * 400), "at most 2000 characters"),
    ]


def test_the_formulas_of_the_tutorial_and_the_allowed_transforms_are_admitted() -> None:
    frame = read_csv_bytes(RUGGED.read_bytes())
    for formula in ADMITTED:
        check_formula(formula)
        assert build_design(frame, formula).rows_used == 170, formula


def test_every_attack_is_refused_by_name_before_anything_runs(tmp_path: Path) -> None:
    frame = read_csv_bytes(RUGGED.read_bytes())
    marker = tmp_path / "pwned"
    for formula, named in attacks(marker):
        with pytest.raises(SpecError, match="formula") as refused:
            build_design(frame, formula)
        assert named in str(refused.value), (formula, str(refused.value))
    assert not marker.exists()


@EMBEDDED_AND_FLEET
def test_a_hostile_formula_submitted_exits_2_writes_nothing_and_runs_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    for formula, named in attacks(marker)[:8]:
        args = ["submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula", formula]
        for command in (args, ["submit", "sweep", *args[2:], "--seeds", "2"]):
            result = CliRunner().invoke(get_cli(), command)
            assert result.exit_code == BAD_INPUT, (command, result.output)
            assert named in result.stderr
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert not marker.exists()


@EMBEDDED_AND_FLEET
def test_a_hostile_formula_planted_in_a_stored_spec_is_refused_by_readers_and_workers(
    stack: Stack, tmp_path: Path
) -> None:
    """Whoever can write the database cannot make a reader (`jobs export`) or a worker run a
    formula's code: the design is built through the same check."""
    kiln = offline_client(stack)
    marker = tmp_path / "pwned"
    formula, named = attacks(marker)[0]
    reader = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=10, num_samples=10, seed=1)
    queued = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=10, num_samples=10, seed=1)
    with stack.sessions()() as session:
        for job_id, status in ((reader, "succeeded"), (queued, "queued")):
            job = session.get(Job, job_id)
            assert job is not None
            session.execute(update(Job).where(Job.id == job_id).values(
                spec={**job.spec, "formula": formula}, status=status))  # fmt: skip
        session.commit()
    result = CliRunner().invoke(get_cli(), ["export", reader, "-o", str(tmp_path / "x.nc")])
    assert result.exit_code == BAD_INPUT and named in result.stderr, result.output
    assert run_in_process(stack, queued) == "failed"
    assert named in (kiln.job(queued)["error"] or "")
    assert not marker.exists()
