"""`jobs workers` and `jobs stats` against a real worker process."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import RUGGED, RUGGED_FORMULA, run_cli
from tests.params import FLEET_AND_SLOW_EMBEDDED


@FLEET_AND_SLOW_EMBEDDED
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


def test_the_embedded_broker_can_be_seen_and_stopped(tmp_path: Path) -> None:
    from worker.embedded import ensure_embedded_broker

    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path / "home")

    def jobs(*args: str) -> str:
        done = run_cli(*args, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert jobs("broker", "status").startswith("not running (socket ")
    ensure_embedded_broker(tmp_path / "home")
    assert jobs("broker", "status").startswith("running (pid ")
    assert jobs("broker", "stop").startswith("stopped (pid ")
    assert jobs("broker", "status").startswith("not running")
    assert jobs("broker", "stop") == "not running"
    env["KILN_BROKER_URL"] = "redis://:secret@127.0.0.1:6379/0"
    assert (
        jobs("broker", "status") == "not embedded: KILN_BROKER_URL is redis://:***@127.0.0.1:6379/0"
    )
