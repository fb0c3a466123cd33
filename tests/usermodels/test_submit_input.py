"""Users' model files and data, refused before anything is written: a readable message naming
the problem (file, line, function, data name), exit code 2, no row, no message on the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from db.models import Dataset, Job, ModelSource
from kiln.cli import get_cli
from tests.conftest import Stack
from tests.params import EACH_DATABASE
from tests.scheduler.test_bad_input import queued_messages

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SCHOOLS_JSON = EXAMPLES / "eight_schools.json"

MODEL = """\
import pyro
import pyro.distributions as dist


def model(J, y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("J", J):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)
"""


def submit(*args: str) -> Result:
    return CliRunner().invoke(get_cli(), ["submit", "fit", *args, "--json"])


def assert_nothing_written(stack: Stack) -> None:
    with stack.sessions()() as session:
        for table in (Job, Dataset, ModelSource):
            assert session.scalar(select(func.count()).select_from(table)) == 0, table
    assert queued_messages(stack.broker_url) == 0


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CASES = [
    (
        "syntax",
        MODEL.replace("def model(J, y, sigma):", "def model(J, y, sigma)"),
        None,
        (),
        "m.py line 5: expected ':'",
    ),
    (
        "no-function",
        MODEL.replace("def model", "def modle"),
        None,
        (),
        "m.py has no function `model` (it defines: modle)",
    ),
    (
        "missing-data-name",
        MODEL,
        '{"J": 8, "y": [1, 2, 3, 4, 5, 6, 7, 8]}',
        (),
        "model(J, y, sigma) needs `sigma`, which d.json does not have (it has: J, y)",
    ),
    (
        "extra-data-name",
        MODEL,
        '{"J": 1, "y": [1], "sigma": [1], "tau": 2}',
        (),
        "d.json has `tau`, which is not a parameter of model(J, y, sigma)",
    ),
    (
        "ragged",
        MODEL,
        '{"J": 2, "y": [[1, 2], [3]], "sigma": [1, 1]}',
        (),
        "data field `y` is a ragged nested list",
    ),
    ("string", MODEL, '{"J": 2, "y": "abc", "sigma": [1, 1]}', (), "data field `y` is a str"),
    ("not-object", MODEL, "[1, 2, 3]", (), "the JSON must be an object"),
    ("bad-json", MODEL, '{"J": 2,', (), "not a readable JSON file"),
    ("guide-missing", MODEL, None, ("--guide", "{model}:guide"), "m.py has no function `guide`"),
    ("formula", MODEL, None, ("--formula", "y ~ x"), "--formula is for built-in models"),
    ("mcmc-option-with-svi", MODEL, None, ("--chains", "2"), "--chains is for --method nuts"),
    ("chains-zero", MODEL, None, ("--method", "nuts", "--chains", "0"), "spec.chains"),
    ("accept", MODEL, None, ("--method", "nuts", "--target-accept", "1.5"), "spec.target_accept"),
    (
        "guide-with-nuts",
        MODEL,
        None,
        ("--method", "nuts", "--guide", "{model}:model"),
        "--guide is for SVI",
    ),
]


@EACH_DATABASE
@pytest.mark.parametrize(("source", "data", "extra", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_model_or_data_writes_nothing(stack, tmp_path, source, data, extra, message) -> None:
    model = write(tmp_path, "m.py", source)
    data_path = write(tmp_path, "d.json", data or '{"J": 2, "y": [1.0, 2.0], "sigma": [1, 1]}')
    extra = [e.format(model=model) for e in extra]
    result = submit("--model", f"{model}:model", "--data", data_path, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.stdout == ""
    assert_nothing_written(stack)


@EACH_DATABASE
def test_missing_model_file_and_unknown_model_are_named(stack, tmp_path) -> None:
    result = submit("--model", str(tmp_path / "nope.py"), "--data", str(SCHOOLS_JSON))
    assert result.exit_code == 2 and "nope.py not found" in result.stderr
    result = submit("--model", "linreq", "--data", str(SCHOOLS_JSON))
    assert result.exit_code == 2
    assert (
        "--model 'linreq': not a built-in model (linreg, bnn-classifier, forecast-linreg,"
        " forecast-bnn, vae, hmm) nor a FILE.py[:FUNCTION]; did you mean `linreg`?"
    ) in result.stderr
    assert_nothing_written(stack)


@EACH_DATABASE
def test_a_model_file_is_stored_once_by_content(stack) -> None:
    args = ("--model", f"{SCHOOLS_PY}:model", "--data", str(SCHOOLS_JSON), "--steps", "5")
    for _ in range(2):
        assert submit(*args).exit_code == 0
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
        assert session.scalar(select(func.count()).select_from(ModelSource)) == 1
        source = session.scalars(select(ModelSource)).one()
        assert source.content == SCHOOLS_PY.read_text()
        assert source.id.startswith("sha256:") and source.filename == "eight_schools.py"
        job = session.scalars(select(Job)).first()
        assert job.source_id == source.id and job.spec["model_source"] == source.id
        assert job.info["data"] == {"format": "json", "shapes": {"J": [], "y": [8], "sigma": [8]}}
    assert queued_messages(stack.broker_url) == 2


def test_csv_columns_become_arrays() -> None:
    from kiln.userdata import parse_user_data

    fmt, data = parse_user_data(b"x,n\n0.5,1\n1.5,2\n", "d.csv")
    assert fmt == "csv" and data == {"x": [0.5, 1.5], "n": [1, 2]}
    assert isinstance(cast(list[Any], data["n"])[0], int)
