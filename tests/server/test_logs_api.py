"""A job's log over the HTTP API: `kiln logs` prints the same as directly (with --tail and
--follow of an ended job), pages go on after a line number, and no one reads another
user's log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import run_in_process
from tests.server.conftest import Api, same_cli
from tests.server.test_auth import submit_fit

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one backend: jobs run


@pytest.fixture
def info_logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # Kiln's per-job lines, as `kiln worker` logs them
    yield
    root.setLevel(level)


@SQLITE
def test_a_jobs_log_reads_back_over_the_api_as_it_does_directly_and_only_by_its_owner(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result], info_logs: None
) -> None:
    from kiln.remote import RemoteClient

    made = submit_fit(api, "alice", steps="20")
    assert made.status_code == 201, made.text
    job_id = str(made.json()["jobs"][0]["id"])
    assert run_in_process(api.stack, job_id) == "succeeded"
    remote = api.remote_env("alice", tmp_path / "laptop")
    for args in (["logs", job_id], ["logs", job_id, "--tail", "1"],
                 ["logs", job_id, "--follow"], ["logs", job_id[:8]]):  # fmt: skip
        done = same_cli(api, jobs_cli, remote, *args)
        assert done.exit_code == 0, (args, done.stderr)
    assert f"job {job_id}: succeeded in" in done.stdout
    assert f"job {job_id}: claimed by in-process" in done.stdout

    with RemoteClient(api.url, api.tokens["alice"]) as alice:
        lines = alice.log_lines(job_id)
        assert len(lines) >= 2 and lines[0].stream == "kiln"
        assert alice.logs(job_id, after=lines[0].seq) == "".join(
            line.text + "\n" for line in lines[1:]
        )
    page = api.http("alice").get(f"/jobs/{job_id}/logs", params={"after": lines[-1].seq})
    assert page.json() == {"id": job_id, "status": "succeeded", "more": False, "lines": []}
    assert api.http("alice").get(f"/jobs/{job_id}/logs", params={"tail": 5000}).status_code == 422

    hidden = api.http("bob").get(f"/jobs/{job_id}/logs")
    assert (hidden.status_code, hidden.json()["detail"]) == (404, f"job {job_id} not found")
    as_bob = jobs_cli("logs", job_id, env=api.remote_env("bob", tmp_path / "bob"))
    assert (as_bob.exit_code, as_bob.stderr) == (3, f"error: job {job_id} not found\n")
    assert "/jobs/{job_id}/logs" in api.http(None).get("/openapi.json").json()["paths"]
