"""Shell completion, as a shell asks for it (`_KILN_COMPLETE=... kiln` in a subprocess): job
and sweep ids complete from the database, a database that is unreachable offers nothing and
prints nothing, and choices and sites that are misspelt name the close ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client
from tests.params import EACH_DATABASE

KILN = str(Path(sys.executable).parent / "kiln")


def complete(
    env: dict[str, str], words: str, shell: str = "bash"
) -> subprocess.CompletedProcess[str]:
    """What `kiln` answers a `shell` asking to complete `words` (the last one unfinished)."""
    parts = words.split(" ")
    asked = {"_KILN_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
             "COMP_CWORD": str(len(parts) - 1)}  # fmt: skip
    return subprocess.run([KILN], env={**env, **asked}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_bash_script_hooks_the_name_it_was_called_by() -> None:
    done = subprocess.run([KILN], env={"_KILN_COMPLETE": "bash_source", "PATH": ""},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "complete -o nosort -F _kiln_completion kiln" in done.stdout


@EACH_DATABASE
def test_job_and_sweep_ids_complete_from_the_typed_prefix(stack: Stack) -> None:
    client = offline_client(stack)
    fits = [client.submit_fit(RUGGED, RUGGED_FORMULA, steps=10) for _ in range(3)]
    sweep = client.submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01, 0.02]}, steps=10)
    env = {**stack.env, "KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url}
    offered = complete(env, "kiln show ")
    assert offered.returncode == 0 and offered.stderr == ""
    ids = [line.split(",")[1] for line in offered.stdout.splitlines()]
    assert set(fits) | set(sweep.members) <= set(ids)
    typed = fits[0][:6]
    narrowed = complete(env, f"kiln params {typed}").stdout.splitlines()
    assert f"plain,{fits[0]}" in narrowed
    assert all(line.split(",")[1].startswith(typed) for line in narrowed)
    zsh = complete(env, f"kiln samples {fits[0]}", shell="zsh").stdout.splitlines()
    assert zsh[:3] == ["plain", fits[0], "linreg (fit, queued)"]  # value, then its help
    predict = complete(env, f"kiln submit predict --from {fits[1]}").stdout
    assert predict.splitlines() == [f"plain,{fits[1]}"]
    sweeps = complete(env, "kiln sweep show ").stdout.splitlines()
    assert sweeps == [f"plain,{sweep.sweep_id}"]
    assert complete(env, "kiln show zzzz").stdout.strip() == ""


def test_an_unreachable_database_offers_nothing_and_says_nothing(tmp_path: Path) -> None:
    env = {"KILN_HOME": str(tmp_path), "KILN_DATABASE_URL": "postgresql://127.0.0.1:9/none",
           "PATH": ""}  # fmt: skip
    done = complete(env, "kiln show ")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "", "")
    # the embedded database is not created by a TAB
    fresh = complete({"KILN_HOME": str(tmp_path / "new"), "PATH": ""}, "kiln show ")
    assert (fresh.stdout.strip(), fresh.stderr) == ("", "") and not (tmp_path / "new").exists()


def test_a_misspelt_guide_or_option_names_the_close_one(tmp_path: Path) -> None:
    from kiln.cli import get_cli

    env = {"KILN_HOME": str(tmp_path)}
    sweep = CliRunner().invoke(get_cli(), ["submit", "sweep", "--model", "linreg", "--data",
                                           str(RUGGED), "--formula", RUGGED_FORMULA, "--guide",
                                           "AutoNormall"], env=env)  # fmt: skip
    assert sweep.exit_code == 2 and "did you mean `AutoNormal`?" in sweep.output
    fit = CliRunner().invoke(get_cli(), ["submit", "fit", "--model", "linreg", "--data",
                                         str(RUGGED), "--formula", RUGGED_FORMULA, "--guide",
                                         "AutoMultivariateNormall"], env=env)  # fmt: skip
    assert fit.exit_code == 2 and "did you mean `AutoMultivariateNormal`?" in fit.output
    option = CliRunner().invoke(get_cli(), ["submit", "fit", "--stpes", "10"], env=env)
    assert option.exit_code == 2 and "--steps" in option.output  # click's own suggestion
