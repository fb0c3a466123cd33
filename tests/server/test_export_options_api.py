"""`jobs export --id-column` and `--warmup` over the HTTP API: the server labels the rows from
the data set it holds and reads the warmup draws; the CLI prints and writes what it does
directly, refuses the same columns with the same messages, and a bundle's labels are checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result

from kiln.errors import InfraError
from tests.server.conftest import Api, direct_env, same_cli
from tests.server.test_auth import submit_fit
from tests.server.test_results_api import SQLITE, api_client, assert_same_results, forged, ran


def same_content(a: Path, b: Path) -> None:
    """Two netCDF exports with the same groups, each equal in values, coordinates and attrs."""
    from kiln.export import import_arviz_quietly

    import_arviz_quietly()
    import arviz as az

    left, right = az.from_netcdf(str(a)), az.from_netcdf(str(b))
    assert left.groups() == right.groups()
    for group in left.groups():
        assert left[group].identical(right[group]), group


@SQLITE
def test_rows_labelled_over_the_api_are_what_jobs_export_writes_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    from kiln.remote import RemoteClient

    fit = ran(api, submit_fit(api, "alice", steps="30"))
    predict = ran(api, api.http("alice").post(f"/jobs/{fit}/predict",
                                              data={"num_samples": "20", "seed": "0"}))  # fmt: skip
    remote = api.remote_env("alice", tmp_path / "laptop")
    out = tmp_path / "out"
    out.mkdir()
    files = {}
    for job_id, name in ((fit, "fit.json"), (predict, "p.json"), (fit, "fit.nc"),
                         (predict, "p.nc")):  # fmt: skip
        for where, env in (("api", remote), ("direct", direct_env(api))):
            path = out / f"{where}-{name}"
            done = jobs_cli("export", job_id, "--id-column", "isocode", "-o", str(path), env=env)
            assert done.exit_code == 0, done.output
            files[where, name] = path
    for name in ("fit.json", "p.json"):
        assert files["api", name].read_bytes() == files["direct", name].read_bytes(), name
    assert b'"NOR"' in files["api", "p.json"].read_bytes()
    for name in ("fit.nc", "p.nc"):
        same_content(files["api", name], files["direct", name])

    # The same refusals, with the same messages, and nothing written.
    for column in ("isocod", "cont_africa", "rugged", "x" * 300):
        target = out / "refused.json"
        refused = same_cli(api, jobs_cli, remote, "export", fit, "--id-column", column,
                           "-o", str(target))  # fmt: skip
        assert refused.exit_code == 2 and refused.stderr.startswith("error: --id-column")
        assert not target.exists()
    hinted = jobs_cli("export", fit, "--id-column", "isocod", "-o", str(out / "r.nc"), env=remote)
    assert "did you mean `isocode`?" in hinted.stderr

    with RemoteClient(api.url, api.tokens["alice"]) as client:
        for job_id in (fit, predict):
            got = client.results(job_id, id_column="isocode")
            assert_same_results(got, api_client(api).results(job_id, id_column="isocode"))
            assert got.rows is not None and got.rows.dtype.kind == "U"
    alice = api.http("alice")
    download = alice.get(f"/jobs/{fit}/export", params={"format": "json", "id_column": "isocode"})
    assert download.content == files["direct", "fit.json"].read_bytes()
    too_long = alice.get(f"/jobs/{fit}/results", params={"id_column": "x" * 300})
    assert too_long.status_code == 422
    hidden = api.http("bob").get(f"/jobs/{fit}/results", params={"id_column": "isocode"})
    assert hidden.status_code == 404


@pytest.mark.parametrize(
    "labels", [["a", "\x1b[31m"], ["a", "a"], ["a", ""], ["a", 3], ["x" * 65], "ab"]
)
def test_a_bundle_whose_row_labels_are_not_short_printable_and_unique_is_refused(
    labels: object,
) -> None:
    import io
    import json
    import zipfile

    from kiln.export import JobResults
    from kiln.remote_results import encode_results

    good = JobResults(job_id="j", kind="fit", status="succeeded", fit_id="j", fit_spec={},
                      info={}, losses=[], posterior={"a": np.zeros(3)},
                      rows=np.asarray(["AFG", "NOR"]))  # fmt: skip
    body = encode_results(good)
    assert forged(body).results("j").rows.tolist() == ["AFG", "NOR"]
    with zipfile.ZipFile(io.BytesIO(body)) as bundle:
        members = {m.filename: bundle.read(m) for m in bundle.infolist()}
    meta = json.loads(np.load(io.BytesIO(members["meta.npy"])).tobytes())
    meta["fields"]["row_labels"] = labels
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["meta.npy"] = buffer.getvalue()
    forged_body = io.BytesIO()
    with zipfile.ZipFile(forged_body, "w") as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
    with pytest.raises(InfraError, match="results bundle Kiln does not read"):
        forged(forged_body.getvalue()).results("j")


MODEL = """
import pyro
import pyro.distributions as dist
import torch


def line(x, y=None):
    a = pyro.sample("a", dist.Normal(torch.zeros(()), 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones(())))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(a + x, sigma), obs=y)
"""


@SQLITE
def test_warmup_draws_kept_over_the_api_export_as_they_do_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    from kiln.remote import RemoteClient
    from tests.conftest import run_in_process

    path = tmp_path / "line.py"
    path.write_text(MODEL)
    x = np.linspace(-1, 1, 10)
    data = {"x": x.tolist(), "y": (1.0 + x).tolist()}
    with RemoteClient(api.url, api.tokens["alice"]) as client:
        fit = client.submit_model(path, data, function="line", method="nuts", chains=2,
                                  warmup=30, samples=30, seed=1, jit="off",
                                  keep_warmup=True)  # fmt: skip
        assert run_in_process(api.stack, fit) == "succeeded"
        assert client.inference_data(fit, warmup=True)["warmup_posterior"]["a"].shape == (2, 30)
    plain = ran(api, submit_fit(api, "alice", steps="20"))
    remote = api.remote_env("alice", tmp_path / "laptop")
    out = tmp_path / "out"
    out.mkdir()
    for where, env in (("api", remote), ("direct", direct_env(api))):
        done = jobs_cli("export", fit, "--warmup", "-o", str(out / f"{where}.nc"), env=env)
        assert done.exit_code == 0, done.output
    same_content(out / "api.nc", out / "direct.nc")
    for job_id, name in ((plain, "p.nc"), (fit, "f.csv")):
        refused = same_cli(api, jobs_cli, remote, "export", job_id, "--warmup",
                           "-o", str(out / name))  # fmt: skip
        assert refused.exit_code == 2 and "--warmup" in refused.stderr
    assert "resubmit the fit with" in jobs_cli("export", plain, "--warmup", "-o",
                                               str(out / "p.nc"), env=remote).stderr  # fmt: skip
