"""kiln.toml is read from KILN_HOME or from the file KILN_CONFIG names, never from the working
directory; keyword arguments win over KILN_* variables, which win over the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.errors import UserError
from kiln.settings import Settings, get_settings
from tests.conftest import run_cli


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """No KILN_* variables, HOME in tmp_path, and the working directory elsewhere in it."""
    for key in [k for k in os.environ if k.upper().startswith("KILN_")]:
        monkeypatch.delenv(key)
    found = {name: tmp_path / name for name in ["user", "home", "cwd", "etc"]}
    for path in found.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(found["user"]))
    monkeypatch.chdir(found["cwd"])
    return found


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_kiln_toml_in_the_working_directory_is_ignored(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(dirs["cwd"] / "kiln.toml", 'lease_s = 7\ndatabase_url = "sqlite:///planted.db"\n')
    assert get_settings().lease_s == 60.0  # KILN_HOME unset: ~/.kiln, which has none
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    settings = get_settings()
    assert (settings.lease_s, settings.database_url) == (60.0, "")


def test_an_empty_kiln_home_is_the_default_not_the_working_directory(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(dirs["cwd"] / "kiln.toml", "lease_s = 7\n")
    monkeypatch.setenv("KILN_HOME", "")
    settings = get_settings()
    assert settings.home == dirs["user"] / ".kiln"
    assert settings.lease_s == 60.0


def test_the_file_in_kiln_home_is_read(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(dirs["user"] / ".kiln" / "kiln.toml", "lease_s = 8\n")
    assert get_settings().lease_s == 8.0  # the default home, ~/.kiln
    write(dirs["home"] / "kiln.toml", 'lease_s = 9\nbroker_url = "redis://r:6379/0"\n')
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    settings = get_settings()
    assert (settings.lease_s, settings.broker_url) == (9.0, "redis://r:6379/0")
    # A `home` keyword argument (Client(home=...)) decides the same way KILN_HOME does.
    assert Settings(home=dirs["user"] / ".kiln").lease_s == 8.0


def test_the_file_kiln_config_names_is_read_instead(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(dirs["home"] / "kiln.toml", "lease_s = 9\nmax_attempts = 5\n")
    config = write(dirs["etc"] / "fleet.toml", "lease_s = 11\n")
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    monkeypatch.setenv("KILN_CONFIG", str(config))
    settings = get_settings()
    assert settings.lease_s == 11.0
    assert settings.max_attempts == 3  # the file in KILN_HOME is not read at all


def test_variables_win_over_the_file_and_keywords_over_both(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(dirs["home"] / "kiln.toml", "lease_s = 9\nmax_attempts = 5\n")
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    monkeypatch.setenv("KILN_LEASE_S", "4")
    settings = get_settings()
    assert (settings.lease_s, settings.max_attempts) == (4.0, 5)
    assert get_settings(lease_s=2).lease_s == 2.0


def test_the_file_in_kiln_home_may_not_move_home(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write(dirs["home"] / "kiln.toml", f'home = "{dirs["etc"]}"\n')
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    with pytest.raises(UserError, match="sets `home`, but KILN_HOME decides") as caught:
        get_settings()
    assert str(toml) in str(caught.value)


def test_a_kiln_config_file_may_set_home_relative_to_itself(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(dirs["etc"] / "kiln.toml", 'home = "state"\n')
    monkeypatch.setenv("KILN_CONFIG", str(config))
    assert get_settings().home == dirs["etc"] / "state"
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    assert get_settings().home == dirs["home"]  # the variable still wins


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "no such file"),
        ("lease_s = \n", "cannot be read as TOML"),
        ("lease_s = 5\nleas_s = 5\n", "unknown setting `leas_s`"),
        ("lease_s = -1\n", r"`lease_s`: Input should be greater than 0 \(got -1\)"),
        ('max_attempts = "many"\n', "`max_attempts`: Input should be a valid integer"),
    ],
)
def test_a_bad_explicit_file_is_a_user_error_naming_it(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, text: str | None, problem: str
) -> None:
    config = dirs["etc"] / "kiln.toml"
    if text is not None:
        write(config, text)
    monkeypatch.setenv("KILN_CONFIG", str(config))
    with pytest.raises(UserError, match=problem) as caught:
        get_settings()
    assert str(config) in str(caught.value)


def test_a_bad_file_in_kiln_home_is_an_error_too(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write(dirs["home"] / "kiln.toml", "lease_s = = 1\n")
    monkeypatch.setenv("KILN_HOME", str(dirs["home"]))
    with pytest.raises(UserError, match="cannot be read as TOML") as caught:
        get_settings()
    assert str(toml) in str(caught.value)


def test_a_bad_variable_is_a_user_error_naming_it(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_LEASE_S", "soon")
    with pytest.raises(UserError, match=r"KILN_LEASE_S: .*number.* \(got 'soon'\)"):
        get_settings()


def _cli_env(dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KILN_")}
    return {**env, "KILN_HOME": str(dirs["home"]), **extra}


def test_the_cli_says_what_is_wrong_with_kiln_config_and_exits_2(dirs: dict[str, Path]) -> None:
    missing = dirs["etc"] / "missing.toml"
    done = run_cli("list", env=_cli_env(dirs, KILN_CONFIG=str(missing)), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: KILN_CONFIG={missing}: no such file")
    assert "Traceback" not in done.stderr
    bad = write(dirs["etc"] / "bad.toml", "lease_s = 0\n")
    done = run_cli("list", env=_cli_env(dirs, KILN_CONFIG=str(bad)), timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"settings file {bad}: `lease_s`" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_cli_uses_the_file_kiln_config_names(dirs: dict[str, Path]) -> None:
    db = dirs["etc"] / "fleet.db"
    config = write(dirs["etc"] / "kiln.toml", f'database_url = "sqlite:///{db}"\n')
    write(dirs["cwd"] / "kiln.toml", f'database_url = "sqlite:///{dirs["cwd"] / "cwd.db"}"\n')
    done = run_cli("db", "upgrade", env=_cli_env(dirs, KILN_CONFIG=str(config)), timeout=120)
    assert done.returncode == 0, done.stderr
    assert db.exists()
    assert not (dirs["cwd"] / "cwd.db").exists()
