"""Prometheus metrics for the fleet, read from the database at scrape time (KilnCollector)."""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import JobStatus, utcnow
from db.stats import FleetStats, fleet_stats

log = logging.getLogger(__name__)

# Fits run from seconds to hours.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))

BrokerDepths = Callable[[], Mapping[str, int]]


def histogram_buckets(
    seconds: Iterable[float], buckets: tuple[float, ...] = DURATION_BUCKETS
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs for HistogramMetricFamily, and the sum of `seconds`."""
    ordered = sorted(seconds)
    pairs = [(floatToGoString(b), float(bisect_right(ordered, b))) for b in buckets]
    if buckets[-1] != float("inf"):
        pairs.append(("+Inf", float(len(ordered))))
    return pairs, float(sum(ordered))


class KilnCollector(Collector):
    """Jobs, queues, workers, steps and job durations, queried from the database per scrape.

    A database error does not fail the scrape: it yields `kiln_up 0` (and the broker's depths,
    if those can be read) and logs a warning, so Prometheus tells "database down" apart from
    "endpoint down" (as postgres_exporter's `pg_up` does). Other exceptions are bugs; they
    reach the HTTP server, which answers 500 and keeps serving.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        alive_s: float,
        broker_depths: BrokerDepths | None = None,
    ) -> None:
        self.sessions = sessions
        self.alive_s = alive_s
        self.broker_depths = broker_depths
        # The steps counter never goes down here: a job resumed from an earlier checkpoint, or
        # deleted, lowers the sum, and Prometheus would read that as a reset and spike rate().
        self._steps_seen = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        # Read everything before yielding anything, so a failing query yields no half scrape.
        try:
            with self.sessions() as session:
                stats = fleet_stats(session, alive_s=self.alive_s)
        except SQLAlchemyError as e:
            log.warning("metrics: database query failed, reporting kiln_up 0: %s", e)
            stats = None
        yield GaugeMetricFamily(
            "kiln_up",
            "1 if this scrape could read the Kiln database, else 0.",
            float(stats is not None),
        )
        if stats is not None:
            yield from self._fleet_metrics(stats)
        if self.broker_depths is not None:
            yield from self._broker_metrics(self.broker_depths)

    def _fleet_metrics(self, stats: FleetStats) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "kiln_jobs", "Jobs by queue and status.", labels=["queue", "status"]
        )
        depth = GaugeMetricFamily(
            "kiln_queue_depth", "Queued jobs in the database.", labels=["queue"]
        )
        alive = GaugeMetricFamily(
            "kiln_workers_alive",
            "Workers with a recent heartbeat serving the queue.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "kiln_oldest_queued_age_seconds",
            "Age of the oldest queued job (0 when none is queued).",
            labels=["queue"],
        )
        rate = GaugeMetricFamily(
            "kiln_step_rate",
            "Summed steps per second of the running jobs, each since its start.",
            labels=["queue"],
        )
        now = utcnow()
        for queue in stats.queues:
            for status in JobStatus:
                jobs.add_metric([queue, status.value], stats.counts[queue][status.value])
            depth.add_metric([queue], stats.counts[queue][JobStatus.QUEUED.value])
            alive.add_metric([queue], stats.workers_alive[queue])
            first = stats.oldest_queued.get(queue)
            oldest.add_metric(
                [queue], max((now - first).total_seconds(), 0.0) if first is not None else 0.0
            )
            rate.add_metric([queue], stats.step_rates[queue])
        yield from (jobs, depth, alive, oldest, rate)

        with self._lock:
            self._steps_seen = max(self._steps_seen, stats.total_steps)
            steps = self._steps_seen
        yield CounterMetricFamily("kiln_steps_total", "Steps run by all jobs.", value=steps)

        by_label: dict[tuple[str, str], list[float]] = {}
        for kind, ended_as, seconds in stats.durations:
            by_label.setdefault((kind, ended_as), []).append(seconds)
        duration = HistogramMetricFamily(
            "kiln_job_duration_seconds",
            "Run time of ended jobs, from the start of their last attempt to the end.",
            labels=["kind", "status"],
        )
        for (kind, ended_as), runs in sorted(by_label.items()):
            buckets, total = histogram_buckets(runs)
            duration.add_metric([kind, ended_as], buckets, total)
        yield duration

    def _broker_metrics(self, broker_depths: BrokerDepths) -> Iterator[Metric]:
        try:
            depths = dict(broker_depths())
        except Exception as e:  # any broker hiccup: skip the metric, not the scrape
            log.warning("metrics: broker depths unavailable, kiln_broker_messages skipped: %s", e)
            return
        family = GaugeMetricFamily(
            "kiln_broker_messages", "Messages waiting in the broker.", labels=["queue"]
        )
        for queue, count in sorted(depths.items()):
            family.add_metric([queue], count)
        yield family


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running metrics endpoint; close() stops it."""

    server: WSGIServer
    thread: threading.Thread
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving, release the port and wait for the server thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    sessions: sessionmaker[Session],
    *,
    port: int,
    host: str = "127.0.0.1",
    alive_s: float = 20.0,
    broker_depths: BrokerDepths | None = None,
) -> MetricsServer:
    """Serve KilnCollector at http://host:port/metrics from a daemon thread.

    The collector has its own registry, so the process's default metrics (and anything else
    registered globally) are not exported. port=0 picks a free port (see .port). Raises
    OSError if the port is taken.
    """
    registry = CollectorRegistry()
    registry.register(KilnCollector(sessions, alive_s=alive_s, broker_depths=broker_depths))
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics: serving on http://%s:%d/metrics", host, server.server_port)
    return MetricsServer(server=server, thread=thread, registry=registry)
