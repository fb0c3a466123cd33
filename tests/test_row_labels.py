"""`jobs export --id-column`: a fit's and a prediction's rows labelled by a column of their
data (rugged: `isocode`), and columns that cannot label rows refused with what to try."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from kiln.errors import DataError
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import EACH_DATABASE


def test_a_column_that_cannot_name_rows_is_refused() -> None:
    from kiln.rowlabels import row_labels

    table = pd.DataFrame({"code": ["a", "b", "c"], "n": [3, 1, 3], "x": [0.5, 1.5, 2.5],
                          "odd": ["ok", "\x1b[31mred", "x" * 65]})  # fmt: skip
    everything = np.arange(3)
    assert row_labels(table, "code", np.array([2, 0])).tolist() == ["c", "a"]
    assert row_labels(table, "n", np.array([0, 1])).tolist() == [3, 1]
    for column, message in (
        ("cod", "did you mean `code`?"),
        ("n", "1 duplicate value(s)"),
        ("x", "a float64 column"),
        ("odd", "printable strings of 1 to 64"),
    ):
        with pytest.raises(DataError, match=re.escape(message)):
            row_labels(table, column, everything)
    with pytest.raises(DataError, match="1 row"):
        row_labels(pd.DataFrame({"code": ["a", None]}), "code", np.arange(2))


def jobs(stack: Stack, *args: str) -> Result:
    from kiln.cli import get_cli

    env = {"KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url}
    return CliRunner().invoke(get_cli(), list(args), env=env)


@EACH_DATABASE
def test_a_fit_and_its_prediction_export_rows_labelled_by_isocode(
    stack: Stack, tmp_path: Path
) -> None:
    import xarray as xr

    client = offline_client(stack)
    fit = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, num_samples=20, seed=0)
    assert run_in_process(stack, fit) == "succeeded"
    pred = client.predict(fit, num_samples=20)
    assert run_in_process(stack, pred) == "succeeded"
    from kiln.tables import read_csv_bytes

    isocodes = read_csv_bytes(RUGGED.read_bytes())["isocode"].to_numpy()  # ISO-8859-1 text
    plain = client.inference_data(fit)
    positions = plain["constant_data"]["row"].to_numpy()
    assert positions.dtype.kind == "i" and len(positions) == 170  # rows with a GDP
    labelled = client.inference_data(fit, id_column="isocode")
    assert labelled["constant_data"]["row"].to_numpy().tolist() == isocodes[positions].tolist()
    predicted = client.inference_data(pred, id_column="isocode")
    assert "NOR" in predicted["posterior_predictive"]["row"].to_numpy().tolist()
    out = tmp_path / "fit.nc"
    done = jobs(stack, "export", fit, "--id-column", "isocode", "-o", str(out))
    assert done.exit_code == 0, done.output
    with xr.open_dataset(out, group="constant_data") as data:
        assert data["row"].to_numpy().tolist() == isocodes[positions].tolist()
        assert float(data["X"].sel(row="NOR", term="rugged")) == pytest.approx(2.409)  # Norway's
    for column, message in (
        ("isocod", "did you mean `isocode`?"),
        ("cont_africa", "duplicate value(s)"),
        ("rugged", "float64 column"),
    ):
        refused = jobs(stack, "export", fit, "--id-column", column, "-o", str(tmp_path / "x.nc"))
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert not (tmp_path / "x.nc").exists()
