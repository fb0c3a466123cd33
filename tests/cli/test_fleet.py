"""`jobs workers` and `jobs stats` against a real worker process."""

from __future__ import annotations

import json

from tests.conftest import EMBEDDED_AND_FLEET, RUGGED, RUGGED_FORMULA, run_cli


@EMBEDDED_AND_FLEET
def test_workers_and_stats_follow_the_fleet(stack, start_worker) -> None:
    worker = start_worker("w1")
    done = run_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
                   RUGGED_FORMULA, "--steps", "50", "--then-predict", "20", "--wait", "--json",
                   env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    queued = run_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
                     RUGGED_FORMULA, "--queue", "gpu", "--json", env=stack.env)  # fmt: skip
    assert queued.returncode == 0, queued.stderr

    listed = json.loads(run_cli("workers", "--json", env=stack.env).stdout)
    # a worker on the embedded (SQLite) setup runs users' files, so it also takes cpu.user
    user_queue = ["cpu.user"] if stack.db_url.startswith("sqlite") else []
    assert [(w["name"], w["alive"], w["queues"], w["running"]) for w in listed] == [
        ("w1", True, ["cpu", *user_queue], None)
    ]
    stats = json.loads(run_cli("stats", "--json", env=stack.env).stdout)
    assert stats["cpu"]["jobs"]["succeeded"] == 2 and stats["cpu"]["live_workers"] == 1
    assert stats["gpu"]["jobs"]["queued"] == 1 and stats["gpu"]["live_workers"] == 0
    assert stats["gpu"]["oldest_queued"] is not None

    worker.stop()
    assert json.loads(run_cli("workers", "--json", env=stack.env).stdout) == []
    every = json.loads(run_cli("workers", "--all", "--json", env=stack.env).stdout)
    assert [(w["name"], w["alive"]) for w in every] == [("w1", False)]
    table = run_cli("workers", env=stack.env)
    assert "no live worker" in table.stderr
