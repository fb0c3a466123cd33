"""`jobs compare` over the HTTP API (GET /compare) and directly: the same table and JSON, and
only the caller's own jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.conftest import run_in_process
from tests.server.conftest import Api, same_cli
from tests.usermodels.test_loglik_compare import DATA, MODEL


def test_compare_over_the_api_matches_the_direct_cli_and_is_owner_scoped(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    remote = api.remote_env("alice", tmp_path / "laptop")
    model, data = tmp_path / "line.py", tmp_path / "line.json"
    model.write_text(MODEL)
    data.write_text(json.dumps(DATA))
    ids = []
    for function in ("line", "flat"):
        done = jobs_cli("submit", "fit", "--model", f"{model}:{function}", "--data", str(data),
                        "--steps", "300", "--lr", "0.05", "--num-samples", "200", "--seed", "1",
                        "--json", env=remote)  # fmt: skip
        assert done.exit_code == 0, done.output
        ids.append(json.loads(done.stdout)["id"])
        assert run_in_process(api.stack, ids[-1]) == "succeeded"
    table = same_cli(api, jobs_cli, remote, "compare", *ids)
    assert "elpd_loo" in table.stdout and ids[0] in table.stdout
    entries = json.loads(same_cli(api, jobs_cli, remote, "compare", *ids, "--json").stdout)
    assert [e["id"] for e in entries] == ids  # the line first: it explains y
    assert {"id", "elpd_loo", "se", "p_loo", "rank", "d_loo", "pareto_k_bad"} <= set(entries[0])
    waic = json.loads(same_cli(api, jobs_cli, remote, "compare", *ids, "--ic", "waic",
                               "--json").stdout)  # fmt: skip
    assert "elpd_waic" in waic[0]
    assert api.http("bob").get("/compare", params={"ids": ids}).status_code == 404
    refused = jobs_cli("compare", ids[0], env=remote)
    assert refused.exit_code == 2 and "at least two" in refused.stderr
