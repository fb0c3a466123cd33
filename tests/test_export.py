"""kiln.export: InferenceData groups, CSV and JSON files from stored arrays (no worker)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from kiln.errors import SpecError
from kiln.export import JobResults, draws_table, summary_rows, to_inference_data, write_export


def results(new_data: bool = False) -> JobResults:
    rng = np.random.default_rng(0)
    y = rng.normal(size=4)
    if new_data:
        y[:] = np.nan
    return JobResults(
        job_id="p1", kind="predict", status="succeeded", fit_id="f1",
        fit_spec={"model": "linreg", "formula": "y ~ x", "guide": "AutoNormal"}, info={},
        losses=[(0, 10.0), (1, 9.0), (2, 8.5)],
        posterior={"Intercept": rng.normal(size=50), "x": rng.normal(size=50),
                   "sigma": rng.uniform(size=50)},
        row_sites={"mean": rng.normal(size=(50, 4)), "obs": rng.normal(size=(50, 4))},
        X=np.column_stack([np.ones(4), np.arange(4.0)]), y=y, rows=np.array([0, 2, 3, 7]),
        terms=("Intercept", "x"), response="y", new_data=new_data,
    )  # fmt: skip


def test_inference_data_groups_and_coordinates() -> None:
    idata = to_inference_data(results())
    assert set(idata.groups()) == {
        "posterior", "posterior_predictive", "observed_data", "constant_data", "loss",
        "log_likelihood",
    }  # fmt: skip
    assert idata["posterior"]["x"].dims == ("chain", "draw")
    assert idata["posterior_predictive"]["obs"].dims == ("chain", "draw", "row")
    assert list(idata["observed_data"]["row"].values) == [0, 2, 3, 7]
    assert list(idata["constant_data"]["term"].values) == ["Intercept", "x"]
    assert list(idata["loss"]["loss"].values) == [10.0, 9.0, 8.5]


def test_new_rows_go_to_predictions() -> None:
    idata = to_inference_data(results(new_data=True))
    assert "predictions" in idata.groups() and "predictions_constant_data" in idata.groups()
    assert "observed_data" not in idata.groups() and "posterior_predictive" not in idata.groups()


def test_netcdf_round_trip(tmp_path) -> None:
    r = results()
    path = write_export(r, "netcdf", tmp_path / "r.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    back = arviz.from_netcdf(str(path))
    assert np.allclose(back.posterior["sigma"].values[0], r.posterior["sigma"])
    assert back.posterior.attrs["kiln_job_id"] == "p1"


def test_csv_is_one_row_per_draw(tmp_path) -> None:
    path = write_export(results(), "csv", tmp_path / "r.csv")
    lines = path.read_text().splitlines()
    assert (
        lines[0]
        == "draw,Intercept,x,sigma,mean[0],mean[1],mean[2],mean[3],obs[0],obs[1],obs[2],obs[3]"
    )
    assert len(lines) == 51 and lines[1].startswith("0,")


def test_json_has_no_nan_tokens(tmp_path) -> None:
    path = write_export(results(new_data=True), "json", tmp_path / "r.json")
    doc = json.loads(path.read_text())  # strict JSON: NaN would be invalid
    assert doc["data"]["y"] == [None, None, None, None]
    assert len(doc["predictive"]["obs"]) == 50


def test_bad_output_paths_write_nothing(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        write_export(results(), "csv", tmp_path / "missing" / "r.csv")
    with pytest.raises(SpecError, match="is a directory"):
        write_export(results(), "csv", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tables_name_elements() -> None:
    columns, matrix = draws_table({"b": np.zeros((3, 2, 2))})
    assert columns == ["draw", "b[0,0]", "b[0,1]", "b[1,0]", "b[1,1]"] and matrix.shape == (3, 5)
    stats = np.arange(10.0).reshape(5, 2)
    assert summary_rows("obs", "predictive", stats, (2,)) == [
        ["obs[0]", "predictive", 0.0, 2.0, 4.0, 6.0, 8.0],
        ["obs[1]", "predictive", 1.0, 3.0, 5.0, 7.0, 9.0],
    ]


def test_a_regression_export_has_its_log_likelihood_and_loo_reads_it() -> None:
    import arviz as az
    from scipy import stats

    r = results()
    idata = to_inference_data(r)
    log_lik = idata["log_likelihood"]["obs"]
    assert log_lik.dims == ("chain", "draw", "row")
    expected = stats.norm.logpdf(r.y, r.row_sites["mean"], r.posterior["sigma"][:, None])
    np.testing.assert_allclose(log_lik.values[0], expected, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: ArviZ warns about its Pareto k
        assert np.isfinite(az.loo(idata).elpd_loo)
    # A fit has no `mean` draws: the coefficients times the design matrix give the same.
    fit = JobResults(**{**r.__dict__, "kind": "fit", "row_sites": {}})
    beta = np.column_stack([r.posterior["Intercept"], r.posterior["x"]])
    assert r.X is not None
    again = to_inference_data(fit)["log_likelihood"]["obs"].values[0]
    np.testing.assert_allclose(
        again, stats.norm.logpdf(r.y, beta @ r.X.T, r.posterior["sigma"][:, None]), rtol=1e-12
    )
    assert "log_likelihood" not in to_inference_data(results(new_data=True)).groups()
    assert idata["posterior"].attrs["guide"] == "AutoNormal"
    mcmc = JobResults(**{**r.__dict__, "fit_spec": {**r.fit_spec, "method": "nuts"}})
    assert "guide" not in to_inference_data(mcmc)["posterior"].attrs
