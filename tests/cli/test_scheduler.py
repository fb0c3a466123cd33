"""`jobs scheduler`: the Prometheus endpoint and a reaper that re-sends what the broker lost."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST_FLEET
from tests.fleet.helpers import submit_fit, until
from tests.params import EMBEDDED_AND_FLEET


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def flush_broker(broker_url: str) -> None:
    import redis

    if broker_url.startswith("redis+socket://"):
        client = redis.Redis(unix_socket_path=broker_url.removeprefix("redis+socket://"))
    else:
        client = redis.Redis.from_url(broker_url)
    client.flushdb()
    client.close()


@EMBEDDED_AND_FLEET
def test_scheduler_serves_metrics_and_resends_jobs_the_broker_lost(stack) -> None:
    stack.extra.update(FAST_FLEET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "-v", "scheduler", "--metrics-port", str(port)],
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        job_id = submit_fit(stack, "--steps", "10")
        queued = ("kiln_jobs", (("queue", "cpu"), ("status", "queued")))
        depth = ("kiln_broker_messages", (("queue", "cpu"),))
        metrics = until("a scrape with the queued job",
                        lambda: (m := scrape(port)).get(queued) == 1 and m, timeout=60)  # fmt: skip
        assert metrics[("kiln_up", ())] == 1
        assert metrics[depth] == 1
        assert metrics[("kiln_queue_depth", (("queue", "cpu"),))] == 1

        flush_broker(stack.broker_url)  # Redis lost its data
        assert scrape(port)[depth] == 0
        until("the reaper to send the job again", lambda: scrape(port).get(depth) == 1,
              timeout=30)  # fmt: skip
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "scheduler: reaper every 0.5 s" in out, out
    assert f"job {job_id}: queued but not in the broker; sent again" in out, out
