"""Bad input: a clear message, exit code 2, and nothing written to the database or the queue."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from db.models import Dataset, Job
from kiln.cli import get_cli
from tests.conftest import RUGGED, RUGGED_FORMULA


def queued_messages(broker_url: str) -> int:
    import redis

    if broker_url.startswith("redis+socket://"):
        client = redis.Redis(unix_socket_path=broker_url.removeprefix("redis+socket://"))
    else:
        client = redis.Redis.from_url(broker_url)
    try:
        return sum(client.llen(key) for key in client.keys("cpu*") + client.keys("gpu*"))
    finally:
        client.close()


BAD = [
    (["--model", "nope"], "nope"),
    (["--guide", "AutoMagic"], "AutoMagic"),
    (
        ["--formula", "log(rgdppc_2000) ~ cont_africa * ruggd"],
        "column `ruggd` not in data (did you mean `rugged`",
    ),
    (["--formula", "log(rgdppc_2000) ~ (rugged"], "does not parse"),
    (["--formula", "~ rugged"], "has no response"),
    (["--steps", "0"], "spec.steps: must be > 0"),
    (["--steps", "-5"], "(got -5)"),
    (["--lr", "0"], "spec.lr: must be > 0"),
    (["--lr", "-0.1"], "spec.lr"),
    (["--prior", "slope=normal(0,1)"], "prior for `slope`: no such site"),
    (["--prior", "rugged=normal(0,-1)"], "spec.priors"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[b[1][:24] for b in BAD])
def test_submit_with_bad_input_writes_nothing(stack, tmp_path, change, message) -> None:
    options = {"--model": "linreg", "--data": str(RUGGED), "--formula": RUGGED_FORMULA}
    extra = []
    for key, value in zip(change[::2], change[1::2], strict=True):
        if key in options:
            options[key] = value
        else:
            extra += [key, value]
    args = ["submit", "fit", *[x for kv in options.items() for x in kv], *extra, "--json"]
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert queued_messages(stack.broker_url) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "not a CSV file"),
        (b'{"a": [1, 2, 3]}', "not a CSV file"),
        (b"rgdppc_2000,cont_africa,rugged\n", "no rows"),
        (b"rgdppc_2000,cont_africa,rugged\n,1,2\n", "no rows left"),
    ],
    ids=["empty", "binary", "json", "header-only", "all-missing"],
)
def test_submit_with_unusable_data_file_writes_nothing(stack, tmp_path, content, message) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    args = ["submit", "fit", "--model", "linreg", "--data", str(data), "--formula", RUGGED_FORMULA]
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert queued_messages(stack.broker_url) == 0


def test_missing_data_file_is_named(stack, tmp_path) -> None:
    args = ["submit", "fit", "--model", "linreg", "--data", str(tmp_path / "nope.csv"),
            "--formula", RUGGED_FORMULA]  # fmt: skip
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == 2
    assert "nope.csv not found" in result.stderr


def test_the_same_file_submitted_twice_is_stored_once(stack) -> None:
    args = ["submit", "fit", "--model", "linreg", "--data", str(RUGGED),
            "--formula", RUGGED_FORMULA, "--steps", "5", "--json"]  # fmt: skip
    for _ in range(2):
        assert CliRunner().invoke(get_cli(), args).exit_code == 0
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
        assert session.scalar(select(func.count()).select_from(Dataset)) == 1
    assert queued_messages(stack.broker_url) == 2
