"""Fixtures for the dashboard: one served app per database with real results in it (a fitted
and predicted rugged regression, a sweep, another user's job), and Debian's
chromium driven by Playwright (it cannot download browsers of its own here).

`site` is built once per module and database: the jobs run in this process (run_in_process),
before the browser opens. Screenshots go to SCREENSHOTS under the session's temporary folder;
the path is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, _reset_database, run_in_process
from tests.server import conftest as server_fixtures
from tests.server.conftest import Api, make_api, serve
from tests.server.test_cli_remote import ROOT

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# Read once, before the fixtures set KILN_* aside.
DOCS_SCREENSHOTS = bool(os.environ.get("KILN_DOCS_SCREENSHOTS"))


@dataclass
class Site:
    """The served app and the jobs in it, by what they are."""

    api: Api
    jobs: dict[str, str] = field(default_factory=dict)
    sweep: str = ""
    shots: Path = Path()


def _form(steps: int, **more: str) -> dict[str, str]:
    return {"model": "linreg", "formula": RUGGED_FORMULA, "steps": str(steps), "seed": "0",
            "num_samples": "200", **more}  # fmt: skip


def submit(api: Api, who: str, steps: int = 300, **more: str) -> list[str]:
    """A rugged fit of `who`'s through the API (and its prediction with then_predict=N): ids."""
    with open(RUGGED, "rb") as data:
        answer = api.http(who).post("/jobs/fit", data=_form(steps, **more),
                                    files={"data": ("rugged.csv", data)})  # fmt: skip
    assert answer.status_code == 201, answer.text
    return [str(job["id"]) for job in answer.json()["jobs"]]


def _build(api: Api) -> Site:
    site = Site(api)
    fit, predict = submit(api, "alice", then_predict="400")
    for job_id in (fit, predict):
        assert run_in_process(api.stack, job_id) == "succeeded"
    site.jobs.update(fit=fit, predict=predict, bobs=submit(api, "bob", steps=50)[0])
    _sweep(api, site)
    return site


def mcmc_fit(api: Api, site: Site) -> str:
    """An MCMC fit of alice's (eight schools, 2 chains), run here: its own sandboxed process,
    seconds."""
    examples = ROOT / "examples"
    form = {"model": "eight_schools.py:model", "method": "nuts", "max_tree_depth": "4",
            "warmup": "40", "samples": "60", "chains": "2", "jit": "off", "seed": "0"}  # fmt: skip
    files = {"model_file": ("eight_schools.py", (examples / "eight_schools.py").read_bytes()),
             "data": ("8.json", (examples / "eight_schools.json").read_bytes())}  # fmt: skip
    mcmc = api.http("alice").post("/jobs/fit", data=form, files=files)
    assert mcmc.status_code == 201, mcmc.text
    site.jobs["mcmc"] = str(mcmc.json()["jobs"][0]["id"])
    assert run_in_process(api.stack, site.jobs["mcmc"]) == "succeeded"
    return site.jobs["mcmc"]


def _sweep(api: Api, site: Site) -> None:
    spec = json.dumps(
        {
            "base": {"model": "linreg", "formula": RUGGED_FORMULA, "steps": 40, "num_samples": 20},
            "grid": {"lr": [0.01, 0.03]},
            "seeds": 2,
        }
    )
    with open(RUGGED, "rb") as data:
        sweep = api.http("alice").post("/sweeps", data={"spec": spec},
                                       files={"data": ("rugged.csv", data)})  # fmt: skip
    assert sweep.status_code == 201, sweep.text
    site.sweep = sweep.json()["id"]
    for batch in sweep.json()["batches"]:
        assert run_in_process(api.stack, batch) == "succeeded"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         screenshots: Path) -> Iterator[Site]:  # fmt: skip
    """The dashboard served over SQLite or PostgreSQL, with results in it."""
    folder = tmp_path_factory.mktemp(f"web-{request.param}")
    home = folder / "home"
    home.mkdir()
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("KILN_")]}
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'kiln.db'}"
    else:
        url = request.getfixturevalue("postgres_server")
    _reset_database(url)
    stack = Stack(home=home, db_url=url, broker_url="redis://127.0.0.1:9/0")
    try:
        with serve(make_api(stack)) as api:
            built = _build(api)
            built.shots = screenshots / request.param
            built.shots.mkdir(parents=True, exist_ok=True)
            yield built
    finally:
        if stack.engine is not None:
            stack.engine.dispose()
        if request.param == "postgres":
            _reset_database(url)
        os.environ.update(saved)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    yield folder
    print(f"\ndashboard screenshots: {folder}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright (`make test` installs it when it is missing)."""
    if not CHROMIUM.exists():
        from tests.conftest import missing

        missing(f"{CHROMIUM} not installed (apt-get install chromium; `make test` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        yield launched
        launched.close()


def keep(shot: Path, name: str) -> None:
    """Copy a screenshot into docs/ (the README shows it) when KILN_DOCS_SCREENSHOTS is set
    (`KILN_DOCS_SCREENSHOTS=1 pytest tests/web -k sqlite`): a test run leaves the tree as it was.
    (.gitignore keeps PNGs out of the repository except those directly in docs/.)"""
    if not DOCS_SCREENSHOTS:
        return
    target = ROOT / "docs" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, target)


# The HTTP API's fixtures (a served app per test, on SQLite or PostgreSQL) for test_pages.py.
api_stack = server_fixtures.api_stack
api = server_fixtures.api
