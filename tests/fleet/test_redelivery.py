"""Celery's Redis transport re-delivers a message that stays unacked longer than its
visibility_timeout, while the first worker still runs the job. The claim (a conditional
UPDATE on status and lease) turns the second delivery away: the fit runs once."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import FAST_FLEET, Stack, run_cli
from tests.fleet.helpers import job_row, submit_fit, until
from tests.params import FLEET_AND_SLOW_EMBEDDED


def restore_visible(stack: Stack) -> None:
    """What kombu in an idle worker does every unacked_restore_interval x throttle (100 s by
    default): put messages unacked for longer than visibility_timeout back in their queue."""
    from worker.app import make_app

    app = make_app(stack.settings(), broker_url=stack.broker_url)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                         "visibility_timeout": 1}  # fmt: skip
    with app.connection_for_write() as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_AND_SLOW_EMBEDDED
def test_a_fit_longer_than_the_visibility_timeout_runs_once(stack, start_worker) -> None:
    stack.extra.update(FAST_FLEET, KILN_VISIBILITY_TIMEOUT_S="1")
    first = start_worker("w1")
    second = start_worker("w2")
    job_id = submit_fit(stack, "--steps", "6000", "--seed", "2")
    until("the fit to run", lambda: job_row(stack, job_id).step > 100, timeout=60)
    time.sleep(1.5)  # older than the visibility timeout now
    restore_visible(stack)
    done = run_cli("watch", job_id, "--timeout", "240", env=stack.env)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(run_cli("show", job_id, "--json", env=stack.env).stdout)
    assert shown["status"] == "succeeded" and shown["attempts"] == 1
    assert [a["outcome"] for a in shown["attempt_log"]] == ["succeeded"]
    turned_away = f"job {job_id}: not claimable"
    logs = first.log.read_text() + second.log.read_text()
    assert logs.count(turned_away) >= 1, "the message was never delivered twice"
