"""Start-up: `kiln --help` and the read commands import nothing heavy, and every command is
listed by the lazy group with its own short help (docs/benchmarks.md has the timings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process

# What a read command never needs: inference, tables, migrations, plots, the broker's client.
HEAVY = frozenset({"torch", "pyro", "pandas", "formulaic", "alembic", "matplotlib", "arviz",
                   "celery", "kombu", "scipy", "xarray", "sklearn"})  # fmt: skip
# `--help` reads no settings and opens no database either.
NOT_FOR_HELP = HEAVY | {"sqlalchemy", "pydantic_settings", "numpy", "db", "rich"}


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages a `kiln ARGS` process imported, read from `-X importtime`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "kiln.cli", *args],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}  # fmt: skip
    names.discard("package")  # the header line: "self [us] | cumulative | imported package"
    assert "kiln.cli" in names, done.stderr[-2000:]  # the parse saw the imports
    return {name.split(".")[0] for name in names}


@pytest.fixture
def fitted(tmp_path: Path) -> tuple[Stack, str]:
    """A SQLite database in a fresh KILN_HOME with one finished 10-step fit."""
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home=home, db_url=f"sqlite:///{home / 'kiln.db'}", broker_url="embedded")
    env = {**stack.env, "KILN_DATABASE_URL": ""}  # the embedded default, as a user has it
    upgrade = subprocess.run([sys.executable, "-m", "kiln.cli", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    job_id = offline_client(stack).submit_fit(RUGGED, RUGGED_FORMULA, steps=10, seed=0,
                                              num_samples=10)  # fmt: skip
    assert run_in_process(stack, job_id) == "succeeded"
    return stack, job_id


def test_help_imports_no_settings_database_or_inference(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path / "home")
    for args in (["--help"], ["list", "--help"], ["submit", "fit", "--help"]):
        assert imported(args, env) & NOT_FOR_HELP == set(), args
    assert not (tmp_path / "home").exists()  # nothing read, nothing written


def test_list_and_show_on_sqlite_import_no_inference_tables_or_migrations(
    fitted: tuple[Stack, str],
) -> None:
    stack, job_id = fitted
    env = {**stack.env, "KILN_DATABASE_URL": ""}
    for args in (["list"], ["list", "--json"], ["show", job_id], ["show", job_id, "--json"]):
        modules = imported(args, env)
        assert "sqlalchemy" in modules  # it did read the database
        assert modules & HEAVY == set(), args


def test_every_command_is_in_the_lazy_map_with_its_own_short_help() -> None:
    from kiln.cli import get_cli
    from kiln.cli.lazy import COMMANDS

    group = get_cli()
    assert sorted(group.commands) == sorted(COMMANDS)
    for name, command in group.commands.items():
        assert COMMANDS[name].short_help == command.get_short_help_str(10**4), name
        assert command.callback is None or command.callback.__module__ in COMMANDS[name].modules


def test_help_lists_every_command_with_the_short_help_it_would_show_when_loaded() -> None:
    """`kiln --help` from the map alone prints what the group with every module loaded does."""
    loaded = "from kiln.cli import get_cli; get_cli()(['--help'], prog_name='jobs')"
    env = {**os.environ, "COLUMNS": "80"}
    outputs = [
        subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env
        ).stdout  # fmt: skip
        for args in (["-m", "kiln.cli", "--help"], ["-c", loaded])
    ]
    assert outputs[0] == outputs[1]
    assert "\n  worker " in outputs[0] and "\n  list " in outputs[0]
