"""`jobs list --where` directly and over the API: the same output, and no one finds another
user's jobs through a query."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.db.test_search import MCMC, SVI, add_job
from tests.server.conftest import Api, direct_env, same_cli


def add_jobs(api: Api) -> None:
    with api.stack.sessions()() as session:
        add_job(session, "job0000a", 1, SVI, name="rugged-base", owner="alice", final_loss=2.5,
                tags={"study": "a"}, params={"rugged": {"mean": -0.1}})  # fmt: skip
        add_job(session, "job0000b", 2, SVI, name="rugged-fast", owner="alice", final_loss=1.5,
                params={"rugged": {"mean": -0.3}})  # fmt: skip
        add_job(session, "job0000c", 3, MCMC, name="eight", owner="bob", tags={"study": "a"})
        session.commit()


def test_named_fits_found_by_or_and_a_posterior_summary_read_the_same_over_the_api(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    add_jobs(api)
    remote = api.remote_env("alice", tmp_path / "laptop")
    # (directly, no identity is checked: bob's job would be found too)
    where = "(tag.study = 'a' OR params.rugged.mean < -0.2) AND owner = 'alice'"
    found = same_cli(api, jobs_cli, remote, "list", "--where", where, "--json")
    assert [(d["id"], d["name"]) for d in json.loads(found.stdout)] == [
        ("job0000b", "rugged-fast"), ("job0000a", "rugged-base")]  # fmt: skip
    picked = same_cli(api, jobs_cli, remote, "list", "--where", where, "--order-by", "final_loss",
                      "--columns", "name,final_loss,params.rugged.mean", "--json")  # fmt: skip
    assert json.loads(picked.stdout) == [
        {"id": "job0000b", "name": "rugged-fast", "final_loss": 1.5, "params.rugged.mean": -0.3},
        {"id": "job0000a", "name": "rugged-base", "final_loss": 2.5, "params.rugged.mean": -0.1},
    ]  # fmt: skip
    table = same_cli(api, jobs_cli, remote, "list", "--where", "method = 'svi'", "--limit", "1",
                     "--offset", "1")  # fmt: skip
    assert "rugged-base" in table.stdout and "rugged-fast" not in table.stdout
    for bad in (["--where", "statu = 'failed'"], ["--columns", "id,final_los"],
                ["--order-by", "name sideways"], ["--where", "name = 'x"]):  # fmt: skip
        refused = same_cli(api, jobs_cli, remote, "list", *bad)
        assert refused.exit_code == 2, refused.stderr
        assert any(w in refused.stderr for w in ("did you mean", "expected", "closing quote"))


def test_a_query_never_shows_a_user_the_jobs_of_another(
    api: Api, jobs_cli: Callable[..., Result]
) -> None:
    add_jobs(api)
    for who, where, expected in [
        ("alice", "owner = 'bob'", []),
        ("alice", "tag.study = 'a'", ["job0000a"]),
        ("bob", "owner != 'x' OR NOT owner = 'bob'", ["job0000c"]),
        ("admin", "tag.study = 'a'", ["job0000c", "job0000a"]),
        ("reader", "name LIKE 'rugged%'", ["job0000b", "job0000a"]),
    ]:
        answer = api.http(who).get("/jobs", params={"where": where})
        assert answer.status_code == 200, answer.text
        assert [d["id"] for d in answer.json()] == expected, (who, where)
    assert api.http("alice").get("/jobs", params={"where": "owner = 'bob'",
                                                  "owner": "bob"}).json() == []  # fmt: skip
    bad = api.http("alice").get("/jobs", params={"where": "final_loss < 'a'"})
    assert bad.status_code in (400, 422) and "compares with a number" in bad.text
    direct = jobs_cli("list", "--where", "owner = 'bob'", "--json", env=direct_env(api))
    assert [d["id"] for d in json.loads(direct.stdout)] == ["job0000c"]  # direct: no identity
