"""Results over the HTTP API: `jobs samples/diagnostics/metrics/export/plot` print and write the
same as directly; the draws and the results bundle come back bit for bit, without pickle; no
one reads another user's results."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import Result

from kiln.errors import InfraError
from tests.conftest import run_in_process
from tests.server.conftest import Api, direct_env, same_cli
from tests.server.test_auth import submit_fit
from tests.server.test_cli_remote import ROOT

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one backend: jobs run
PNG = b"\x89PNG\r\n\x1a\n"


def ran(api: Api, response: httpx.Response) -> str:
    """Run the job a submission created, here; its id."""
    assert response.status_code == 201, response.text
    job_id = str(response.json()["jobs"][0]["id"])
    assert run_in_process(api.stack, job_id) == "succeeded"
    return job_id


def assert_same_results(a: Any, b: Any) -> None:
    """Two JobResults field by field: arrays with their dtype, shape and every bit (NaN too)."""
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or x is None:
            assert (x is None) == (y is None), f.name
            if x is not None:
                assert (x.dtype, x.shape) == (y.dtype, y.shape), f.name
                np.testing.assert_array_equal(x, y, err_msg=f.name, strict=True)
        elif x and isinstance(next(iter(x.values()), None) if isinstance(x, dict) else x,
                              np.ndarray):  # fmt: skip
            assert list(x) == list(y), f.name
            for site in x:
                assert x[site].dtype == y[site].dtype, (f.name, site)
                np.testing.assert_array_equal(x[site], y[site], strict=True)
        else:
            assert (type(x), x) == (type(y), y), f.name


@SQLITE
def test_a_linreg_fit_and_its_prediction_read_back_as_they_do_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    from kiln.remote import RemoteClient

    fit = ran(api, submit_fit(api, "alice", steps="40"))
    predict = ran(api, api.http("alice").post(f"/jobs/{fit}/predict",
                                              data={"num_samples": "30", "seed": "0"}))  # fmt: skip
    remote = api.remote_env("alice", tmp_path / "laptop")
    out = tmp_path / "out"
    out.mkdir()
    for args in (["samples", predict], ["samples", fit, "--format", "json"],
                 ["samples", predict, "--site", "obs", "--raw"],
                 ["samples", predict, "--site", "mean", "--raw", "--format", "json"],
                 ["samples", fit, "--site", "nope"], ["diagnostics", fit],
                 ["metrics", predict, "--format", "json"], ["metrics", fit, "--name", "nope"],
                 ["export", fit, "--format", "json", "-o", str(out / "fit.json")],
                 ["export", predict, "--format", "csv", "-o", str(out / "p.csv")],
                 ["plot", fit, "--kind", "trace", "-o", str(out / "t.png")],
                 ["plot", fit, "-o", str(out / "no.svg")]):  # fmt: skip
        same_cli(api, jobs_cli, remote, *args)
    # The same files, byte for byte: figures (the fit's predictive one is of its prediction).
    files: dict[tuple[str, str], bytes] = {}
    for where, env in (("api", remote), ("direct", direct_env(api))):
        for kind in ("predictive", "loss", "params"):
            drawn = jobs_cli("plot", fit, "--kind", kind, "-o", str(out / "f.png"), env=env)
            assert drawn.exit_code == 0, drawn.output
            files[where, kind] = (out / "f.png").read_bytes()
            if kind == "predictive":
                assert drawn.stderr.startswith(f"fit {fit}: plotting its prediction {predict}\n")
        for job_id, name in ((fit, "fit.json"), (predict, "p.csv")):
            fmt = name.split(".")[1]
            done = jobs_cli("export", job_id, "--format", fmt, "-o", str(out / name), env=env)
            assert done.exit_code == 0, done.output
            files[where, name] = (out / name).read_bytes()
    for key in ("predictive", "loss", "params", "fit.json", "p.csv"):
        assert files["api", key] == files["direct", key], key
    assert files["api", "predictive"].startswith(PNG)

    with RemoteClient(api.url, api.tokens["alice"]) as client:
        direct = api_client(api)
        for job_id in (fit, predict):
            assert_same_results(client.results(job_id), direct.results(job_id))
            assert client.latest_prediction(job_id) == direct.latest_prediction(job_id)
            drawn_remote, drawn_direct = client.draws(job_id), direct.draws(job_id)
            assert list(drawn_remote) == list(drawn_direct)
            for site, values in drawn_direct.items():
                np.testing.assert_array_equal(drawn_remote[site], values, strict=True)
        assert client.latest_prediction(fit[:8]) == predict

    # The .npy of one site is its draws, bit for bit; an unknown site is a 404 problem.
    alice = api.http("alice")
    got = alice.get(f"/jobs/{predict}/samples/obs")
    assert got.headers["content-type"] == "application/x-npy"
    drawn_obs = np.load(io.BytesIO(got.content), allow_pickle=False)
    expected = api_client(api).draws(predict, ["obs"])["obs"]
    assert drawn_obs.dtype == expected.dtype
    np.testing.assert_array_equal(drawn_obs, expected, strict=True)
    missing = alice.get(f"/jobs/{predict}/samples/nope")
    assert (missing.status_code, missing.json()["detail"]) == (
        404, f"job {predict} has no site `nope`")  # fmt: skip

    # Downloads: the export and the figure, as files.
    nc = alice.get(f"/jobs/{predict}/export", params={"format": "netcdf"})
    assert nc.status_code == 200, nc.text
    assert nc.headers["content-type"] == "application/x-netcdf"
    assert nc.headers["content-disposition"] == f'attachment; filename="{predict}.nc"'
    (out / "down.nc").write_bytes(nc.content)
    jobs_cli("export", predict, "-o", str(out / "direct.nc"), env=direct_env(api))
    same_posterior(out / "down.nc", out / "direct.nc")
    csv = alice.get(f"/jobs/{predict}/export", params={"format": "csv"})
    assert csv.content == files["direct", "p.csv"]
    figure = alice.get(f"/jobs/{fit}/plot")
    assert figure.headers["content-type"] == "image/png" and figure.content.startswith(PNG)
    assert figure.headers["kiln-note"] == f"fit {fit}: plotting its prediction {predict}"
    refused = alice.get(f"/jobs/{fit}/plot", params={"kind": "trace"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == f"job {fit} is not an MCMC fit; it has no chains to trace"
    early = ran_not(api, submit_fit(api, "alice"))
    unfinished = alice.get(f"/jobs/{early}/results")
    assert (unfinished.status_code, unfinished.json()["detail"]) == (
        422, f"job {early} is queued; it has no results to read (yet)")  # fmt: skip
    for args in (["export", early, "-o", str(out / "e.nc")], ["samples", early],
                 ["plot", early, "-o", str(out / "e.png")]):  # fmt: skip
        assert same_cli(api, jobs_cli, remote, *args).exit_code in (1, 2), args
    as_bob = jobs_cli("plot", fit, "-o", str(out / "b.png"),
                      env=api.remote_env("bob", tmp_path / "bob"))  # fmt: skip
    assert (as_bob.exit_code, as_bob.stderr) == (3, f"error: job {fit} not found\n")

    # Bob sees none of it: every route is the 404 of a job that does not exist.
    bob = api.http("bob")
    for path in ("metrics", "diagnostics", "samples", "samples/obs", "latest-prediction",
                 "results", "export", "plot"):  # fmt: skip
        for job_id in (predict, fit):
            hidden = bob.get(f"/jobs/{job_id}/{path}")
            assert (hidden.status_code, hidden.json()["detail"]) == (
                404, f"job {job_id} not found"), path  # fmt: skip
    assert api.http("reader").get(f"/jobs/{predict}/samples/obs").content == got.content


def ran_not(api: Api, response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["jobs"][0]["id"])


def api_client(api: Api) -> Any:
    from kiln.client import Client

    return Client.over(api.stack.settings(), api.stack.sessions(), lambda: None)


def same_posterior(a: Path, b: Path) -> None:
    from kiln.export import import_arviz_quietly

    import_arviz_quietly()
    import arviz as az

    left, right = az.from_netcdf(str(a)), az.from_netcdf(str(b))
    assert left.groups() == right.groups()
    assert left.posterior.equals(right.posterior)


@SQLITE
def test_an_mcmc_fit_reads_back_as_it_does_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    examples = ROOT / "examples"
    form = {"model": "eight_schools.py:model", "method": "nuts", "warmup": "20",
            "samples": "20", "chains": "1", "jit": "off", "seed": "0"}  # fmt: skip
    files = {"model_file": ("eight_schools.py", (examples / "eight_schools.py").read_bytes()),
             "data": ("8.json", (examples / "eight_schools.json").read_bytes())}  # fmt: skip
    fit = ran(api, api.http("bob").post("/jobs/fit", data=form, files=files))
    remote = api.remote_env("bob", tmp_path / "laptop")
    out = tmp_path / "out"
    out.mkdir()
    for args in (["diagnostics", fit], ["diagnostics", fit, "--json"], ["samples", fit],
                 ["samples", fit, "--site", "theta", "--raw"], ["metrics", fit],
                 ["plot", fit, "--kind", "loss", "-o", str(out / "l.png")],
                 ["export", fit, "--format", "csv", "-o", str(out / "f.csv")]):  # fmt: skip
        assert same_cli(api, jobs_cli, remote, *args).exit_code in (0, 1, 2, 3)
    for where, env in (("api", remote), ("direct", direct_env(api))):
        drawn = jobs_cli("plot", fit, "--kind", "trace", "-o", str(out / f"{where}.png"), env=env)
        assert drawn.exit_code == 0, drawn.output
        written = jobs_cli("export", fit, "-o", str(out / f"{where}.nc"), env=env)
        assert written.stderr == f"wrote {out / f'{where}.nc'} (netcdf, job {fit})\n"
    assert (out / "api.png").read_bytes() == (out / "direct.png").read_bytes()
    same_posterior(out / "api.nc", out / "direct.nc")
    diagnostics = api.http("bob").get(f"/jobs/{fit}/diagnostics").json()
    assert {s["site"] for s in diagnostics["sites"]} >= {"mu", "tau", "theta"}
    assert api.http("alice").get(f"/jobs/{fit}/diagnostics").status_code == 404


@SQLITE
def test_a_library_fit_with_metrics_reads_back_as_it_does_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    """Library models are submitted on the database (the API does not take them yet)."""
    from scheduler.limits import Owner
    from tests.conftest import SHARED, offline_client

    client = offline_client(api.stack)
    request = client.library_request("forecast-linreg", SHARED / "ethusd_tweets.csv",
                                     ["epochs=3"], seed=0)  # fmt: skip
    jobs = client.submit(request, then_predict=20, owner=Owner("alice"))
    fit, predict = (job.id for job in jobs)
    assert [run_in_process(api.stack, job) for job in (fit, predict)] == ["succeeded"] * 2
    remote = api.remote_env("alice", tmp_path / "laptop")
    out = tmp_path / "out"
    out.mkdir()
    for args in (["metrics", fit], ["metrics", fit, "--name", "train_elbo", "--format", "csv"],
                 ["metrics", predict, "--format", "json"], ["samples", predict],
                 ["plot", fit, "--kind", "loss", "-o", str(out / "x.png")]):  # fmt: skip
        assert same_cli(api, jobs_cli, remote, *args).exit_code == 0, args
    for kind in ("metrics", "predictive"):
        drawn = {}
        for where, env in (("api", remote), ("direct", direct_env(api))):
            done = jobs_cli("plot", fit, "--kind", kind, "-o", str(out / "f.png"), env=env)
            assert done.exit_code == 0, done.output
            drawn[where] = (out / "f.png").read_bytes()
        assert drawn["api"] == drawn["direct"] and drawn["api"].startswith(PNG), kind
    alice = api.http("alice")
    train = alice.get(f"/jobs/{fit}/metrics", params={"name": "train_elbo"}).json()["rows"]
    assert [epoch for _, _, epoch, _ in train] == [1, 2, 3]
    assert alice.get(f"/jobs/{fit}/metrics", params={"name": "nope"}).json()["rows"] == []
    assert alice.get(f"/jobs/{fit}/latest-prediction").json() == {"id": predict}
    assert api.http("bob").get(f"/jobs/{fit}/metrics").status_code == 404


def forged(body: bytes) -> Any:
    """A RemoteClient whose server answers every request with `body`."""
    from kiln.remote import RemoteClient

    client = RemoteClient("http://kiln.invalid", "kiln_000000000000_x")
    client._http = httpx.Client(
        base_url="http://kiln.invalid",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)),
    )
    return client


def a_bundle() -> bytes:
    from kiln.export import JobResults
    from kiln.remote_results import decode_results, encode_results

    r = JobResults(job_id="j", kind="fit", status="succeeded", fit_id="j", fit_spec={"a": 1},
                   info={"nan": float("nan")}, losses=[(0, 1.5), (1, float("inf"))],
                   posterior={"mu": np.arange(6, dtype=np.float32).reshape(3, 2)},
                   y=np.array([1.0, np.nan]), terms=("Intercept", "x"),
                   user_data={"J": 8, "y": [1.5, 2]})  # fmt: skip
    body = encode_results(r)
    back = decode_results(body)
    assert back.info["nan"] != back.info["nan"] and back.losses == r.losses
    back.info = r.info
    assert_same_results(back, r)
    return body


def test_a_bundle_with_an_object_array_or_an_extra_member_is_refused() -> None:
    body = a_bundle()
    assert forged(body).results("j").posterior["mu"].dtype == np.float32
    with zipfile.ZipFile(io.BytesIO(body)) as bundle:
        members = {name: bundle.read(name) for name in bundle.namelist()}
    evil = io.BytesIO()
    np.save(evil, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    for name, content in [("a0.npy", evil.getvalue()), ("extra.npy", members["a0.npy"]),
                          ("meta.npy", b"not numpy")]:  # fmt: skip
        changed = io.BytesIO()
        with zipfile.ZipFile(changed, "w") as bundle:
            for member, data in {**members, name: content}.items():
                bundle.writestr(member, data)
        with pytest.raises(InfraError, match="results bundle Kiln does not read"):
            forged(changed.getvalue()).results("j")
    from kiln.remote_results import decode_array

    with pytest.raises(InfraError, match="draws Kiln does not read"):
        decode_array(evil.getvalue())


def test_the_client_reads_no_more_than_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.remote_results

    body = a_bundle()
    monkeypatch.setattr(kiln.remote_results, "MAX_RESULT_BYTES", len(body) - 1)
    with pytest.raises(InfraError, match=f"the limit is {len(body) - 1}"):
        forged(body).results("j")


def test_the_bundle_carries_every_field_of_job_results() -> None:
    from kiln.export import JobResults
    from kiln.remote_results import ARRAY_FIELDS, PLAIN_TYPES, SITE_FIELDS

    assert {f.name for f in fields(JobResults)} == {*PLAIN_TYPES, *SITE_FIELDS, *ARRAY_FIELDS,
                                                    "losses"}  # fmt: skip


def test_every_new_route_is_in_the_openapi_document(api: Api) -> None:
    paths = api.http(None).get("/openapi.json").json()["paths"]
    routes = ("metrics", "diagnostics", "samples", "samples/{site}", "latest-prediction",
              "results", "export", "plot")  # fmt: skip
    assert {f"/jobs/{{job_id}}/{route}" for route in routes} <= set(paths)
    assert json.dumps(paths).count("application/x-npy") == 1
