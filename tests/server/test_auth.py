"""Who may do what over the HTTP API: tokens, roles, owners, and no existence leaks."""

from __future__ import annotations

from typing import Any

from tests.conftest import RUGGED, RUGGED_FORMULA
from tests.server.conftest import Api

PROBLEM = "application/problem+json"


def submit_fit(api: Api, who: str, **fields: Any) -> Any:
    form = {"model": "linreg", "formula": RUGGED_FORMULA, "steps": "50", "seed": "0", **fields}
    with open(RUGGED, "rb") as data:
        return api.http(who).post("/jobs/fit", data=form, files={"data": ("rugged.csv", data)})


def job_of(api: Api, who: str) -> str:
    response = submit_fit(api, who)
    assert response.status_code == 201, response.text
    return str(response.json()["jobs"][0]["id"])


def test_no_token_a_bad_token_and_a_revoked_token_are_401_problems(api: Api) -> None:
    from db.tokens import revoke_token

    nobody = api.http(None).get("/jobs")
    assert nobody.status_code == 401
    assert nobody.headers["content-type"] == PROBLEM
    assert nobody.headers["www-authenticate"] == "Bearer"
    assert "no token" in nobody.json()["detail"]
    alice = api.tokens["alice"]
    for bad in ["nonsense", alice[:-4] + "abcd", "kiln_ffffffffffff_" + alice.split("_", 2)[2]]:
        response = api.http(None).get("/jobs", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert response.json()["detail"] == "the token is not valid"
    assert api.http("alice").get("/jobs").status_code == 200
    with api.stack.sessions()() as session:
        revoke_token(session, api.token_ids["alice"])
    revoked = api.http("alice").get("/jobs")
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]


def test_read_role_sees_everything_but_may_not_submit_or_cancel(api: Api) -> None:
    bobs = job_of(api, "bob")
    reader = api.http("reader")
    assert reader.get(f"/jobs/{bobs}").json()["owner"] == "bob"
    assert [j["id"] for j in reader.get("/jobs").json()] == [bobs]
    refused = submit_fit(api, "reader")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert "role `read` may only read" in refused.json()["detail"]
    assert reader.post(f"/jobs/{bobs}/cancel").status_code == 403
    assert reader.post(f"/jobs/{bobs}/predict", data={"num_samples": "10"}).status_code == 403


def test_alice_cannot_see_cancel_or_predict_from_bobs_job_but_admin_can(api: Api) -> None:
    bobs, alices = job_of(api, "bob"), job_of(api, "alice")
    alice = api.http("alice")
    for method, path in [
        ("GET", f"/jobs/{bobs}"),
        ("GET", f"/jobs/{bobs[:6]}"),
        ("GET", f"/jobs/{bobs}/losses"),
        ("GET", f"/jobs/{bobs}/params"),
        ("POST", f"/jobs/{bobs}/cancel"),
        ("POST", f"/jobs/{bobs}/predict"),
    ]:
        response = alice.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM
        # the same answer as for a job that does not exist: nothing tells them apart
        assert response.json()["detail"] == f"job {path.split('/')[2]} not found"
    assert [j["id"] for j in alice.get("/jobs").json()] == [alices]
    assert alice.get(f"/jobs/{alices}").json()["owner"] == "alice"
    admin = api.http("admin")
    assert {j["id"] for j in admin.get("/jobs").json()} == {bobs, alices}
    predicted = admin.post(f"/jobs/{bobs}/predict", data={"num_samples": "10"})
    assert predicted.status_code == 201, predicted.text
    assert predicted.json()["jobs"][0]["depends_on"] == bobs
    cancelled = admin.post(f"/jobs/{bobs}/cancel")
    assert cancelled.json() == {"id": bobs, "status": "cancelled", "cancel_requested": True}
    assert api.http("bob").post(f"/jobs/{alices}/cancel").status_code == 404
    assert alice.post(f"/jobs/{alices}/cancel").json()["status"] == "cancelled"


def test_the_tokens_table_holds_no_token_only_a_salted_hash(api: Api) -> None:
    from sqlalchemy import text

    from db.tokens import hash_matches

    assert api.http("alice").get("/health").status_code == 200
    with api.stack.sessions()() as session:
        rows = session.execute(text("SELECT * FROM tokens")).mappings().all()
        stored = " ".join(str(v) for row in rows for v in row.values())
    assert len(rows) == 4
    for token in api.tokens.values():
        secret = token.split("_", 2)[2]
        assert token not in stored and secret not in stored
    hashes = [row["hash"] for row in rows]
    assert all(h.startswith("scrypt$") for h in hashes) and len(set(hashes)) == 4
    assert sum(hash_matches(api.tokens["alice"], h) for h in hashes) == 1


def test_a_used_token_records_when_it_was_last_used(api: Api) -> None:
    from db.tokens import list_tokens

    api.http("bob").get("/jobs")
    with api.stack.sessions()() as session:
        used = {v.id: v.last_used_at for v in list_tokens(session)}
    assert used[api.token_ids["bob"]] is not None
    assert used[api.token_ids["alice"]] is None
