"""Formulas are a grammar, not Python: a hostile formula is refused by name wherever a design is
built (the submitter, the worker, a reader's export), and no code in it ever runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from db.models import Job
from kiln.cli import BAD_INPUT, get_cli
from kiln.errors import SpecError
from kiln.formula import check_formula
from kiln.tables import build_design, read_csv_bytes
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET
from tests.security.conftest import Target

ADMITTED = [
    RUGGED_FORMULA,
    "rgdppc_2000 ~ rugged",
    "np.log(rgdppc_2000) ~ I(rugged ** 2) + C(cont_africa)",
    "log(rgdppc_2000) ~ center(rugged) + scale(rugged) - 1",
    "log1p(rgdppc_2000) ~ 0 + sqrt(abs(rugged)) + exp(rugged / 10)",
    "log(rgdppc_2000) ~ cont_africa + rugged + cont_africa:rugged",
    "log(rgdppc_2000) ~ (cont_africa + rugged) ^ 2",
]


TOUCH = "__import__('os').system('touch {M}')"  # {M}: the marker file's path
EIGHT = "cont_africa+rugged+rugged_popw+rugged_slope+rugged_lsd+rugged_pc+land_area+lat"
# (formula, what the refusal names): each would run code, reach a file or exhaust the machine
# if it were evaluated; every one is refused by build_design, wherever a design is built.
ATTACKS = [
    (
        "rgdppc_2000 ~ {rugged*0 + np.__builtins__['__import__']('os').system('touch {M}')}",
        "`{` is not allowed",
    ),
    (f"rgdppc_2000 ~ {TOUCH}", "`__import__` is not allowed"),
    ("rgdppc_2000 ~ np.savetxt('{M}', rugged)", "`np.savetxt` is not an allowed"),
    ("rgdppc_2000 ~ np.fromfile('{M}')", "`np.fromfile` is not an allowed"),
    ("rgdppc_2000 ~ rugged.__class__", "`rugged.` (attribute or subscript)"),
    ("rgdppc_2000 ~ rugged[0]", "`rugged[` (attribute or subscript)"),
    (f"rgdppc_2000 ~ (lambda: {TOUCH})()", "`lambda` is not allowed"),
    ("rgdppc_2000 ~ open('{M}', 'w')", "`open(...)` is not an allowed transform"),
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
    ("rgdppc_2000 ~ rugged.__class__.__mro__", "`rugged.` (attribute or subscript)"),
    ("rgdppc_2000 ~ np.__dict__", "`np.__dict__` is not an allowed transform"),
    ("rgdppc_2000 ~ C(rugged).__init__", "`.` is not allowed"),
    ("rgdppc_2000 ~ I(__import__)", "`__import__` is not allowed"),
    ("rgdppc_2000 ~ \uff4c\uff4f\uff47(rugged)", "(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ rugged\x00", "is not allowed"),
    (f"rgdppc_2000 ~ rugged; {TOUCH}", "`;` is not allowed"),
    ("rgdppc_2000 ~ (x := rugged)", "`:=` is not allowed"),
    ("rgdppc_2000 ~ f'{rugged}'", "a string is not allowed"),
    ("rgdppc_2000 ~ exec('touch {M}')", "`exec(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ compile('1', '', 'eval')", "`compile(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ globals()", "`globals(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ breakpoint()", "`breakpoint(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ os.system('touch {M}')", "`os.` (attribute or subscript)"),
    ("rgdppc_2000 ~ sys.modules", "`sys.` (attribute or subscript)"),
    ("rgdppc_2000 ~ np.load('{M}')", "`np.load` is not an allowed transform"),
    ("rgdppc_2000 ~ np.memmap('{M}')", "`np.memmap` is not an allowed transform"),
    ("rgdppc_2000 ~ center.__globals__", "`center.` (attribute or subscript)"),
    ("rgdppc_2000 ~ log(rugged)[0]", "`[` is not allowed"),
    ("rgdppc_2000 ~ log(rugged, out=rugged)", "`out=` (a keyword argument)"),
    ("rgdppc_2000 ~ rugged # touch {M}", "is not allowed"),
    ("rgdppc_2000 ~ Q('rugged')", "`Q(...)` is not an allowed transform"),
    ("rgdppc_2000 ~ rugged @ rugged", "`@` is not allowed"),
    ("rgdppc_2000 ~ not rugged", "`not` is not allowed"),
    ("rgdppc_2000 ~ rugged == 1", "`==` is not allowed"),
    ("rgdppc_2000 ~ __builtins__", "`__builtins__` is not allowed"),
    ("rgdppc_2000 ~ C(rugged, contr.treatment)", "`contr.` (attribute or subscript)"),
    ("rgdppc_2000 ~ 1j", "`1j` is not a plain number"),
    # the machine, not the code: powers and products that formulaic or Python would expand
    ("rgdppc_2000 ~ rugged ** 99999999999", "the power after `**` must be a plain number"),
    ("rgdppc_2000 ~ I(9 ** 9 ** 9 ** 9)", "not chained"),
    ("rgdppc_2000 ~ I(10 ** 9999999)", "the power after `**` must be a plain number"),
    ("rgdppc_2000 ~ I(rugged ** (9 ** 9))", "the power after `**` must be a plain number"),
    (f"rgdppc_2000 ~ ({EIGHT}) ** 8", "expands into more than 512 terms"),
    (f"rgdppc_2000 ~ ({EIGHT}) * ({EIGHT}) * ({EIGHT}) * ({EIGHT})", "more than 512 terms"),
    ("rgdppc_2000 ~ C(isonum):C(country)", "design columns (a text column or C(...)"),
    ("rgdppc_2000 ~ I(2 ** 100)", "cannot be evaluated"),
    ("rgdppc_2000 ~ I(1 / 0)", "cannot be evaluated"),
    ("rgdppc_2000 ~ rugged | cont_africa", "has several parts (`|`)"),
]
# Refused by the linreg check after the design is built: a term is a site name (255 at most).
SUBMIT_ONLY = [("rgdppc_2000 ~ I(" + "+".join(["rugged"] * 45) + ")", "a term names a site")]


def attacks(marker: Path) -> list[tuple[str, str]]:
    """ATTACKS, with the marker's path in place of {M}."""
    return [(formula.replace("{M}", str(marker)), named) for formula, named in ATTACKS]


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


@pytest.mark.parametrize(("formula", "named"), ATTACKS + SUBMIT_ONLY,
                         ids=[f"{i:02d}" for i in range(len(ATTACKS + SUBMIT_ONLY))])  # fmt: skip
def test_a_hostile_formula_submitted_exits_2_writes_nothing_and_runs_nothing(
    target: Target, formula: str, named: str
) -> None:
    """As a fit and as a sweep (tests/security/conftest.py: `target`)."""
    fit = ("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula", formula)
    target.refuse(fit, named)
    target.refuse(("submit", "sweep", *fit[2:], "--seeds", "2"), named)


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
