"""kiln.Client with a user's model file and a dict of data: HMC by the notebook route."""

from __future__ import annotations

import pytest

from tests.usermodels.test_user_jobs import EMBEDDED, SCHOOLS_PY


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@EMBEDDED
def test_client_runs_a_model_file_by_hmc_on_dict_data(stack, start_worker) -> None:
    from kiln import Client
    from kiln.errors import SpecError

    start_worker("w1")
    data = {"J": 8, "y": [28, 8, -3, 7, -1, 1, 18, 12], "sigma": [15, 10, 16, 11, 9, 11, 10, 18]}
    with Client(database_url=stack.db_url, broker_url=stack.broker_url, home=stack.home) as c:
        job_id = c.submit_model(SCHOOLS_PY, data, method="hmc", chains=2, warmup=200,
                                samples=200, num_steps=10, seed=3)  # fmt: skip
        job = c.wait(job_id, timeout=240)
        assert job["status"] == "succeeded", job["error"]
        assert job["info"]["method"] == "hmc" and job["info"]["chains"] == 2
        diagnostics = c.diagnostics(job_id)
        assert {"mu", "tau", "theta[0]"} <= set(diagnostics["site"])
        assert (diagnostics["r_hat"] < 1.2).all()
        idata = c.inference_data(job_id)
        assert idata.posterior["theta_tilde"].shape == (2, 200, 8)
        assert "tree_depth" not in idata.sample_stats  # HMC builds no tree
        with pytest.raises(SpecError, match="needs `sigma`"):
            c.submit_model(SCHOOLS_PY, {"J": 8, "y": data["y"]})
