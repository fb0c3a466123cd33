"""The rest of the API: the gate before the body, per-user caps, sweeps, library fits, workers,
stats, tokens, the progress stream, and kiln.Client switching to the API by itself."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from click.testing import Result

from tests.conftest import RUGGED, RUGGED_FORMULA, run_in_process
from tests.library.test_forecast_hmm_jobs import ETH
from tests.server.conftest import Api, direct_env, same_cli
from tests.server.test_auth import job_of, submit_fit


def token_for(api: Api, name: str, user: str, role: str = "submit", **caps: Any) -> None:
    from db.tokens import create_token

    with api.stack.sessions()() as session:
        view, api.tokens[name] = create_token(session, user, role, **caps)
        api.token_ids[name] = view.id


def job_count(api: Api) -> int:
    from sqlalchemy import func, select

    from db.models import Job

    with api.stack.sessions()() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(api: Api) -> None:
    """The server answers 401 while the client has sent only the headers of a 1 GB upload."""
    url = urlparse(api.url)
    for auth in ("", "Authorization: Bearer kiln_000000000000_wrong\r\n"):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(
                f"POST /jobs/fit HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {2**30}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
            )
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 401"), answer[:200]
        assert "application/problem+json" in answer


def test_a_users_upload_cap_and_cap_on_unfinished_jobs(api: Api) -> None:
    token_for(api, "small", "dora", max_upload_bytes=2**20, max_unfinished=2)
    big = b"x" * (2 * 2**20)
    refused = api.http("small").post("/jobs/fit", data={"model": "linreg"},
                                     files={"data": ("big.csv", big)})  # fmt: skip
    assert refused.status_code == 413, refused.text
    assert "your cap: KILN_USER_MAX_UPLOAD_MB, or your token's own" in refused.json()["detail"]
    before = job_count(api)
    assert submit_fit(api, "small").status_code == 201
    assert submit_fit(api, "small", then_predict="10").status_code == 422  # 1 + 2 > 2
    assert submit_fit(api, "small").status_code == 201
    third = submit_fit(api, "small")
    assert third.status_code == 422
    assert third.json()["detail"].startswith(
        "user dora has 2 unfinished jobs (waiting, queued or running); 1 more would pass the"
        " cap of 2"
    )
    assert job_count(api) == before + 2  # nothing written by the refused ones
    with api.stack.sessions()() as session:
        from sqlalchemy import select

        from db.models import Job

        owners = set(session.scalars(select(Job.owner)))
    assert owners == {"dora"}
    # admin has no cap by default: the server's KILN_USER_* apply to read and submit users
    assert submit_fit(api, "admin").status_code == 201


def test_the_servers_own_caps_apply_to_users_without_token_caps(api_stack: Any) -> None:
    from tests.server.conftest import make_api, serve

    with serve(make_api(api_stack, user_max_unfinished=1, user_max_upload_mb=1)) as api:
        assert submit_fit(api, "alice").status_code == 201
        assert submit_fit(api, "alice").status_code == 422
        assert submit_fit(api, "bob").status_code == 201  # per user
        big = api.http("bob").post("/jobs/fit", data={"model": "linreg"},
                                   files={"data": ("big.csv", b"y" * (2 * 2**20))})  # fmt: skip
        assert big.status_code == 413


def test_a_sweep_through_the_api_reads_back_as_directly_and_is_its_owners(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    alice = api.remote_env("alice", tmp_path / "alice")
    done = jobs_cli("submit", "sweep", "--model", "linreg", "--data", str(RUGGED),
                    "--formula", RUGGED_FORMULA, "--grid", "lr=0.01,0.02", "--seeds", "2",
                    "--steps", "30", "--num-samples", "20", "--json", env=alice)  # fmt: skip
    assert done.exit_code == 0, done.output
    sweep = json.loads(done.stdout)
    assert len(sweep["members"]) == 4 and sweep["status"] == "queued"
    with api.stack.sessions()() as session:
        from db.sweeps import get_sweep

        assert get_sweep(session, sweep["id"]).owner == "alice"
    for job_id in sweep["batches"]:
        assert run_in_process(api.stack, job_id) == "succeeded"
    for args in (["sweep", "show", sweep["id"], "--json"], ["sweep", "show", sweep["id"]],
                 ["sweep", "list", "--json"], ["show", sweep["members"][0], "--json"]):  # fmt: skip
        over_api = same_cli(api, jobs_cli, alice, *args)
        assert over_api.exit_code == 0, over_api.output
    bob = api.remote_env("bob", tmp_path / "bob")
    for args in (["sweep", "show", sweep["id"]], ["sweep", "cancel", sweep["id"]]):
        hidden = jobs_cli(*args, env=bob)
        assert (hidden.exit_code, hidden.stderr.strip()) == (
            3, f"error: sweep {sweep['id']} not found"), args  # fmt: skip
    assert json.loads(jobs_cli("sweep", "list", "--json", env=bob).stdout) == []
    assert jobs_cli("sweep", "cancel", sweep["id"], env=alice).exit_code == 0


def test_a_library_fit_through_the_api_stores_the_spec_it_would_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    args = ["submit", "fit", "--model", "hmm", "--data", str(ETH), "--set", "states=3",
            "--seed", "1", "--json"]  # fmt: skip
    over_api = jobs_cli(*args, env=api.remote_env("alice", tmp_path / "a"))
    assert over_api.exit_code == 0, over_api.output
    direct = jobs_cli(*args, env=direct_env(api))
    assert direct.exit_code == 0, direct.output
    specs = []
    for done in (over_api, direct):
        shown = jobs_cli("show", json.loads(done.stdout)["id"], "--json", env=direct_env(api))
        specs.append(json.loads(shown.stdout)["spec"])
    assert specs[0] == specs[1]
    assert specs[0]["kind"] == "library_fit" and specs[0]["options"]["states"] == 3
    digits = jobs_cli("submit", "fit", "--model", "vae", "--data", "digits", "--json",
                      env=api.remote_env("alice", tmp_path / "a"))  # fmt: skip
    assert digits.exit_code == 0, digits.output  # the built-in data: nothing uploaded
    bad_args = ["submit", "fit", "--model", "hmm", "--data", str(ETH), "--set", "states=0"]
    bad = jobs_cli(*bad_args, env=api.remote_env("alice", tmp_path / "a"))
    same = jobs_cli(*bad_args, env=direct_env(api))
    assert (bad.exit_code, bad.stderr) == (same.exit_code, same.stderr) and bad.exit_code == 2
    refused = api.http("alice").post("/jobs/fit", data={"model": "hmm", "formula": "y ~ x"})
    assert refused.status_code == 422 and "takes options, not a formula" in refused.text


def test_workers_and_stats_hide_which_job_of_another_user_a_worker_runs(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    from db.claims import claim_job
    from db.workers import register_worker

    bobs = job_of(api, "bob")
    with api.stack.sessions()() as session:
        register_worker(session, name="w1@host", host="host", pid=1, queues=["cpu"],
                        device="cpu")  # fmt: skip
        assert claim_job(session, bobs, worker="w1@host", host="host", pid=1, device="cpu",
                         lease_s=600) is not None  # fmt: skip
    for args in (["workers", "--json"], ["stats", "--json"], ["stats"]):
        same_cli(api, jobs_cli, api.remote_env("admin", tmp_path / "r"), *args)
    seen = {who: api.http(who).get("/workers").json()[0]["running"] for who in ("bob", "alice")}
    assert seen == {"bob": bobs, "alice": "(another user's job)"}


def test_tokens_are_an_admins_and_never_shown_again(api: Api) -> None:
    made = api.http("admin").post("/tokens", data={"user": "erin", "role": "read"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert api.http(None).get("/jobs", headers={"Authorization": f"Bearer {token}"}).is_success
    listed = api.http("admin").get("/tokens").json()
    assert {t["user"] for t in listed} >= {"erin", "alice"}
    assert not any(token in json.dumps(t) or "hash" in t for t in listed)
    assert api.http("alice").get("/tokens").status_code == 403
    assert api.http("alice").post("/tokens", data={"user": "x"}).status_code == 403
    revoked = api.http("admin").post(f"/tokens/{made.json()['id']}/revoke")
    assert revoked.json()["revoked_at"] is not None
    gone = api.http(None).get("/jobs", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 401


def events_of(text: str) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of each event in a text/event-stream body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                      and not line.startswith(":"))  # fmt: skip
        if "event" in fields:
            out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


def test_the_event_stream_of_a_finished_fit_and_a_reconnect(api: Api) -> None:
    job_id = job_of(api, "alice")
    assert run_in_process(api.stack, job_id) == "succeeded"
    stream = api.http("alice").get(f"/jobs/{job_id}/events", params={"every_s": 0.2})
    assert stream.headers["content-type"].startswith("text/event-stream")
    got = events_of(stream.text)
    assert [name for _, name, _ in got] == ["losses", "progress", "end"]
    steps = [step for step, _ in got[0][2]["rows"]]
    assert steps == list(range(50)) and got[0][0] == "49"
    assert got[2][2]["status"] == "succeeded" and got[2][2]["step"] == 50
    again = api.http("alice").get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "45"})
    assert [s for s, _ in events_of(again.text)[0][2]["rows"]] == [46, 47, 48, 49]
    assert api.http("bob").get(f"/jobs/{job_id}/events").status_code == 404


def test_the_event_stream_follows_a_job_until_it_is_cancelled(api: Api) -> None:
    job_id = job_of(api, "alice")

    def cancel_later() -> None:
        time.sleep(1.0)
        api.http("alice").post(f"/jobs/{job_id}/cancel")

    canceller = threading.Thread(target=cancel_later, daemon=True)
    canceller.start()
    started = time.monotonic()
    got = events_of(api.http("alice").get(f"/jobs/{job_id}/events",
                                          params={"every_s": 0.2}).text)  # fmt: skip
    canceller.join(timeout=30)  # its answer read before the server stops
    assert time.monotonic() - started < 10
    assert [(name, data["status"]) for _, name, data in got] == [
        ("progress", "queued"), ("progress", "cancelled"), ("end", "cancelled")]  # fmt: skip


def test_the_loss_backlog_of_an_event_is_thinned_and_keeps_the_last_step(api: Api) -> None:
    from db.losses import losses_after
    from db.models import Loss

    job_id = job_of(api, "alice")
    with api.stack.sessions()() as session:
        session.add_all(Loss(job_id=job_id, step=s, loss=float(s)) for s in range(5000))
        session.commit()
        rows = losses_after(session, job_id, after=-1, limit=1000)
        assert len(rows) <= 1000 and rows[-1][0] == 4999 and rows[0][0] == 0
        steps = [s for s, _ in rows]
        assert steps == sorted(set(steps))
        assert losses_after(session, job_id, after=4990, limit=1000)[0][0] == 4991


def test_client_goes_through_the_api_when_kiln_api_url_is_set(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln import Client
    from kiln.remote import RemoteClient

    monkeypatch.setenv("KILN_API_URL", api.url)
    monkeypatch.setenv("KILN_TOKEN", api.tokens["alice"])
    with Client() as kiln:
        assert isinstance(kiln, RemoteClient)
        job_id = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, seed=0)
        assert kiln.job(job_id)["status"] == "queued"
    direct = Client(database_url=api.stack.db_url)
    assert type(direct) is Client
    direct.close()


def test_the_queues_the_api_names_are_the_fleets() -> None:
    from typing import get_args

    from kiln.server.jobs import WorkerQueue
    from scheduler.routing import QUEUES

    assert set(get_args(WorkerQueue)) == set(QUEUES)


def test_list_filters_and_pages(api: Api) -> None:
    alices = [job_of(api, "alice") for _ in range(3)]
    bobs = job_of(api, "bob")
    admin = api.http("admin")

    def ids(who: str, **params: Any) -> list[str]:
        answer = api.http(who).get("/jobs", params=params)
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()]

    assert ids("admin", owner="alice") == alices[::-1]
    assert ids("admin", owner="alice", limit=2, offset=1) == alices[::-1][1:3]
    assert ids("admin", model="linreg", kind="fit", status="queued") == [bobs, *alices[::-1]]
    assert ids("admin", kind="predict") == []
    assert ids("alice", owner="bob") == [] and ids("bob", owner="bob") == [bobs]
    bad = admin.get("/jobs", params={"kind": "nonsense"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert (
        admin.get("/jobs", params={"limt": 5})
        .json()["detail"]
        .startswith("unknown query parameter 'limt'; /jobs takes: ")
    )
