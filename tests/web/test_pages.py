"""The dashboard over plain HTTP: signing in and out, the cookie and CSRF rules of the gate,
the pages' headers, the cancel form, and the chart routes (their numbers and who may read
them). The browser tests (test_dashboard.py) drive the same pages in chromium."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from tests.conftest import run_in_process
from tests.server.conftest import Api
from tests.server.test_auth import job_of
from tests.web.conftest import submit

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one backend: jobs run


def signed_in(api: Api, who: str) -> httpx.Client:
    """A client that signed in through the login form, as a browser does (cookies kept)."""
    client = httpx.Client(base_url=api.url, timeout=30)
    api.clients.append(client)
    form = client.get("/login")
    assert form.status_code == 200 and "kiln_csrf" in form.cookies
    done = client.post("/login", data={"token": api.tokens[who], "csrf": form.cookies["kiln_csrf"],
                                       "next": "/"})  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    return client


def test_signing_in_sets_the_cookies_and_pages_need_them(api: Api) -> None:
    anonymous = httpx.Client(base_url=api.url, timeout=30)
    api.clients.append(anonymous)
    for path, target in [("/", "/login"), ("/ui/fleet", "/login?next=%2Fui%2Ffleet"),
                         ("/ui/jobs/ab?x=1", "/login?next=%2Fui%2Fjobs%2Fab%3Fx%3D1")]:  # fmt: skip
        answer = anonymous.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, target), path
    nobody = anonymous.get("/jobs")  # the API keeps its answer for a missing token
    assert nobody.status_code == 401 and "no token" in nobody.json()["detail"]
    assert anonymous.get("/static/vendor/uPlot.iife.min.js").status_code == 200  # public
    form = anonymous.get("/login")
    csrf = form.cookies["kiln_csrf"]
    expected = [("content-security-policy", "script-src 'self'"),
                ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer")]  # fmt: skip
    for header, value in expected:
        assert value in form.headers[header]
    stale = anonymous.post("/login", data={"token": api.tokens["alice"], "csrf": "forged"})
    assert stale.status_code == 400 and "kiln_token" not in stale.cookies
    wrong = anonymous.post("/login", data={"token": "kiln_0_nope", "csrf": csrf})
    assert wrong.status_code == 401 and "the token is not valid" in wrong.text
    away = anonymous.post("/login", data={"token": api.tokens["alice"], "csrf": csrf,
                                          "next": "//elsewhere.example/x"})  # fmt: skip
    assert away.status_code == 303 and away.headers["location"] == "/"
    cookies = {c.split("=", 1)[0]: c.lower() for c in away.headers.get_list("set-cookie")}
    assert all(flag in cookies["kiln_token"] for flag in
               ("httponly", "samesite=strict", "path=/", "max-age=43200"))  # fmt: skip
    assert "httponly" not in cookies["kiln_csrf"] and "samesite=strict" in cookies["kiln_csrf"]
    assert "secure" not in cookies["kiln_token"]  # plain http here; https sets it
    assert anonymous.cookies["kiln_csrf"] != csrf  # renewed at sign-in
    page = anonymous.get("/")
    assert page.status_code == 200 and "Signed in as" in page.text and "alice" in page.text
    assert page.headers["x-frame-options"] == "DENY"


def test_a_cookie_needs_the_csrf_header_for_unsafe_calls_and_a_bearer_token_does_not(
    api: Api,
) -> None:
    alices = job_of(api, "alice")
    browser = signed_in(api, "alice")
    assert browser.get(f"/jobs/{alices}").status_code == 200  # a read by cookie
    refused = browser.post(f"/jobs/{alices}/cancel")
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    forged = browser.post(f"/jobs/{alices}/cancel", headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    assert api.http("alice").get(f"/jobs/{alices}").json()["status"] == "queued"
    ok = browser.post(f"/jobs/{alices}/cancel",
                      headers={"X-CSRF-Token": browser.cookies["kiln_csrf"]})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"
    bearer = api.http("alice").post(f"/jobs/{job_of(api, 'alice')}/cancel")
    assert bearer.status_code == 200  # a bearer token is never a browser's ambient credential


def test_the_cancel_form_checks_its_csrf_field_the_role_and_the_owner(api: Api) -> None:
    alices, bobs = job_of(api, "alice"), job_of(api, "bob")
    browser = signed_in(api, "alice")
    page = browser.get(f"/ui/jobs/{alices}")
    assert page.status_code == 200 and 'id="cancel-form"' in page.text
    csrf = browser.cookies["kiln_csrf"]
    assert f'name="csrf" value="{csrf}"' in page.text
    forged = browser.post(f"/ui/jobs/{alices}/cancel", data={"csrf": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert browser.post(f"/ui/jobs/{bobs}/cancel", data={"csrf": csrf}).status_code == 404
    done = browser.post(f"/ui/jobs/{alices}/cancel", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{alices}"
    assert api.http("alice").get(f"/jobs/{alices}").json()["status"] == "cancelled"
    assert api.http("bob").get(f"/jobs/{bobs}").json()["status"] == "queued"
    reader = signed_in(api, "reader")
    assert 'id="cancel-form"' not in reader.get(f"/ui/jobs/{bobs}").text  # may only read
    refused = reader.post(f"/ui/jobs/{bobs}/cancel", data={"csrf": reader.cookies["kiln_csrf"]})
    assert refused.status_code == 403 and "may only read" in refused.text
    assert browser.get(f"/ui/jobs/{bobs}").status_code == 404  # not alice's: not found
    assert browser.get("/ui/sweeps/nosuchsweep").status_code == 404


def test_a_revoked_token_sends_the_page_to_login_and_signing_out_clears_the_cookies(
    api: Api,
) -> None:
    from db.tokens import revoke_token

    browser = signed_in(api, "bob")
    assert browser.get("/ui/fleet").status_code == 200
    bad = browser.post("/logout", data={"csrf": "forged"})
    assert bad.status_code == 400 and browser.get("/").status_code == 200  # still signed in
    out = browser.post("/logout", data={"csrf": browser.cookies["kiln_csrf"]})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "kiln_token" not in browser.cookies
    assert browser.get("/").status_code == 303
    again = signed_in(api, "bob")
    with api.stack.sessions()() as session:
        revoke_token(session, api.token_ids["bob"])
    gone = again.get("/")
    assert gone.status_code == 303 and gone.headers["location"] == "/login"
    assert again.get("/jobs").status_code == 401  # the API answers a revoked cookie with 401


def test_the_jobs_page_filters_and_pages(api: Api) -> None:
    ids = [job_of(api, "alice") for _ in range(3)]
    job_of(api, "bob")
    browser = signed_in(api, "alice")
    page = browser.get("/", params={"size": 10})
    assert all(job_id in page.text for job_id in ids) and "Jobs 1–3 of 3" in page.text
    searched = browser.get("/", params={"text": ids[1][:8], "status": "", "kind": ""})
    assert ids[1] in searched.text and ids[0] not in searched.text
    assert 'data-listable="0"' in searched.text  # a text search: refreshed row by row
    assert "No jobs match" in browser.get("/", params={"owner": "bob"}).text
    assert "No jobs match" in browser.get("/", params={"status": "running"}).text
    admin = signed_in(api, "admin")
    assert "of 4" in admin.get("/", params={"size": 10}).text
    second = admin.get("/", params={"size": 10, "page": 2})
    assert second.status_code == 200 and "data-job=" not in second.text
    assert admin.get("/", params={"status": "nonsense"}).status_code == 422


@SQLITE
def test_the_chart_routes(api: Api) -> None:
    fit, predict = submit(api, "alice", steps=60, then_predict="100")
    for job_id in (fit, predict):
        assert run_in_process(api.stack, job_id) == "succeeded"
    alice, bob = api.http("alice"), api.http("bob")
    hist = alice.get(f"/jobs/{fit}/charts/histogram", params={"site": "sigma", "bins": 12})
    assert hist.status_code == 200, hist.text
    h = hist.json()
    assert len(h["edges"]) == 13 and sum(h["counts"]) == h["draws"] == 200
    draws = np.load(io.BytesIO(alice.get(f"/jobs/{fit}/samples/sigma").content))
    assert h["mean"] == pytest.approx(float(draws.mean()), rel=1e-6)
    assert h["q05"] <= h["q50"] <= h["q95"]
    too_far = alice.get(f"/jobs/{fit}/charts/histogram", params={"site": "sigma", "index": 1})
    assert too_far.status_code == 422 and "has 1 elements" in too_far.json()["detail"]
    missing = alice.get(f"/jobs/{fit}/charts/histogram", params={"site": "nope"})
    assert missing.status_code == 404 and "no site `nope`" in missing.json()["detail"]
    assert bob.get(f"/jobs/{fit}/charts/histogram", params={"site": "sigma"}).status_code == 404
    trace = alice.get(f"/jobs/{fit}/charts/trace", params={"site": "sigma"})
    assert trace.status_code == 422 and "not an MCMC fit" in trace.json()["detail"]
    figure = alice.get(f"/jobs/{fit}/charts/predictive").json()
    assert figure["kind"] == "bands" and figure["prediction"] == predict
    assert [p["label"] for p in figure["panels"]] == ["cont_africa = 0", "cont_africa = 1"]
    assert sum(p["rows"] for p in figure["panels"]) == 170
    for panel in figure["panels"]:
        assert panel["x"] == sorted(panel["x"])
        bands = zip(panel["mean_lo"], panel["mean_mid"], panel["mean_hi"], strict=True)
        assert all(lo <= mid <= hi for lo, mid, hi in bands)
    assert alice.get(f"/jobs/{predict}/charts/predictive").json()["panels"] == figure["panels"]
    queued = submit(api, "alice", steps=10)[0]
    refused = alice.get(f"/jobs/{queued}/charts/predictive")
    assert refused.status_code == 422 and "queued" in refused.json()["detail"]
    assert bob.get(f"/jobs/{fit}/charts/predictive").status_code == 404


def test_signing_in_goes_back_only_to_a_path_of_this_server() -> None:
    from kiln.server.web.login import safe_next

    assert safe_next("/ui/jobs/ab?x=1") == "/ui/jobs/ab?x=1"
    for elsewhere in (None, "", "https://example.org/", "//example.org", "/\\example.org",
                      "/\t/example.org", "ui/jobs"):  # fmt: skip
        assert safe_next(elsewhere) == "/", elsewhere


@SQLITE
def test_a_library_forecast_page_has_metrics_and_a_forecast_band(api: Api) -> None:
    from scheduler.limits import Owner
    from tests.conftest import SHARED, offline_client

    client = offline_client(api.stack)
    request = client.library_request("forecast-linreg", SHARED / "ethusd_tweets.csv",
                                     ["epochs=3"], seed=0)  # fmt: skip
    fit, predict = (job.id for job in client.submit(request, then_predict=20,
                                                    owner=Owner("alice")))  # fmt: skip
    assert [run_in_process(api.stack, job) for job in (fit, predict)] == ["succeeded"] * 2
    page = signed_in(api, "alice").get(f"/ui/jobs/{fit}")
    assert page.status_code == 200 and 'id="metrics"' in page.text and "train_elbo" in page.text
    for job_id in (fit, predict):
        figure = api.http("alice").get(f"/jobs/{job_id}/charts/predictive").json()
        assert figure["kind"] == "forecast" and figure["prediction"] == predict
        days = figure["days"]
        assert days == sorted(days) and len(figure["lo"]) == len(days) == len(figure["observed"])
        assert all(lo <= hi for lo, hi in zip(figure["lo"], figure["hi"], strict=True))
