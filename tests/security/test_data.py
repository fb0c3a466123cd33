"""Hostile data files for a user's model: refused by name at submit (exit 2), nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from db.models import Dataset, Job
from kiln.cli import BAD_INPUT, get_cli
from tests.conftest import EMBEDDED_AND_FLEET, Stack

pytestmark = EMBEDDED_AND_FLEET  # the embedded defaults and a fleet (PostgreSQL + Redis)

SCHOOLS_PY = Path(__file__).resolve().parents[2] / "examples" / "eight_schools.py"
SIGMA = "[15, 10, 16, 11, 9, 11, 10, 18]"
CASES = [
    ('{"J": 8, "sigma": ' + SIGMA + ', "y": Infinity}', "`Infinity` is not a number"),
    ('{"J": 8, "sigma": ' + SIGMA + ', "y": NaN}', "`NaN` is not a number"),
    ('{"J": 8, "sigma": ' + SIGMA + ', "y": 1e400}', "is inf (not finite)"),
    ('{"J": ' + "9" * 100 + ', "sigma": ' + SIGMA + "}", "beyond 64 bits"),
    ('{"J": 8, "sigma": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deep"),
    ('{"J": 8, "sigma": ' + "[" * 40 + "1" + "]" * 40 + "}", "nested deeper than 32"),
    ('{"J": 8, "sigma": [1, [2]]}', "ragged"),
    ('{"J": 8, "sigma": null}', "is a null"),
    ('{"J": 8, "__class__": 1, "sigma": ' + SIGMA + "}", "not a parameter"),
]


@pytest.mark.parametrize(("text", "named"), CASES, ids=[n for _, n in CASES])
def test_a_hostile_data_file_is_refused_and_nothing_is_written(
    stack: Stack, tmp_path: Path, text: str, named: str
) -> None:
    data = tmp_path / "data.json"
    data.write_text(text)
    args = ["submit", "fit", "--model", f"{SCHOOLS_PY}:model", "--data", str(data)]
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == BAD_INPUT, result.output
    assert named in result.stderr
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
