"""Prometheus metrics of the task engine.

One `TaskMetrics` per process (per registry): pass it to `TaskStore(..., metrics=m)` and
`Worker(..., metrics=m)`. Without it they record nothing and pay nothing.

Counters and the run-time histogram are labelled by task name; the label children are
resolved once per name and cached, so recording is a dict lookup plus the increment.
Queue depth and the age of the oldest due task come from the database: one grouped query,
run every `queue_stats_interval` seconds by a worker holding these metrics (or by a
`QueueStatsRefresher` in processes without a worker), never on scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .connections import PoolSource, resolve_pool
from .periodic import Periodic

log = logging.getLogger(__name__)

# Tasks run from milliseconds to many minutes.
RUN_SECONDS_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

# Pending tasks that are due, per queue; the partial index anchor_tasks_claim covers them.
QUEUE_STATS = """
SELECT queue, count(*) AS depth,
       greatest(extract(epoch FROM now() - min(run_at)), 0)::float8 AS oldest
FROM anchor_tasks
WHERE state = 'pending' AND run_at <= now()
GROUP BY queue
"""


@dataclass(frozen=True, slots=True)
class _TaskSeries:
    """The label children of one task name."""

    enqueued: Counter
    completed: Counter
    failed: Counter
    retried: Counter
    run_seconds: Histogram


class TaskMetrics:
    """The engine's metrics, registered in `registry` (the global default registry unless
    given; a registry holds each metric name once, so make one `TaskMetrics` per registry).

    `queue_stats_interval` is how often a worker holding these metrics refreshes the
    database-derived gauges (None: never; call `refresh_queue_stats` yourself).
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        queue_stats_interval: float | None = 15.0,
        run_seconds_buckets: Sequence[float] = RUN_SECONDS_BUCKETS,
    ) -> None:
        self.registry = registry
        self.queue_stats_interval = queue_stats_interval
        self.enqueued_total = Counter(
            "anchor_tasks_enqueued_total",
            "Tasks inserted by enqueue (not counting enqueues of a taken unique tag).",
            ["task"],
            registry=registry,
        )
        self.completed_total = Counter(
            "anchor_tasks_completed_total",
            "Task attempts that completed.",
            ["task"],
            registry=registry,
        )
        self.failed_total = Counter(
            "anchor_tasks_failed_total",
            "Tasks that failed for good (attempts spent), including expired leases.",
            ["task"],
            registry=registry,
        )
        self.retried_total = Counter(
            "anchor_tasks_retried_total",
            "Failed attempts (error, timeout, expired lease) scheduled to run again.",
            ["task"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "anchor_task_run_seconds",
            "How long executors ran, per attempt that completed or failed.",
            ["task"],
            buckets=tuple(run_seconds_buckets),
            registry=registry,
        )
        self.in_flight = Gauge(
            "anchor_tasks_in_flight",
            "Task attempts this process is running now.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "anchor_tasks_queue_depth",
            "Pending tasks that are due, per queue (refreshed periodically).",
            ["queue"],
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "anchor_tasks_oldest_pending_age_seconds",
            "Seconds the longest-waiting due task of a queue has been due (refreshed "
            "periodically; 0 when none is waiting).",
            ["queue"],
            registry=registry,
        )
        self._series: dict[str, _TaskSeries] = {}
        self._known_queues: set[str] = set()
        self._refreshing = False
        self._refreshed_at = float("-inf")

    def _task(self, name: str) -> _TaskSeries:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _TaskSeries(
                enqueued=self.enqueued_total.labels(name),
                completed=self.completed_total.labels(name),
                failed=self.failed_total.labels(name),
                retried=self.retried_total.labels(name),
                run_seconds=self.run_seconds.labels(name),
            )
        return series

    # Recorded by TaskStore and Worker.

    def record_enqueued(self, name: str, count: int = 1) -> None:
        self._task(name).enqueued.inc(count)

    def record_completed(self, name: str) -> None:
        self._task(name).completed.inc()

    def record_failed(self, name: str) -> None:
        self._task(name).failed.inc()

    def record_retried(self, name: str) -> None:
        self._task(name).retried.inc()

    def record_run_time(self, name: str, seconds: float) -> None:
        self._task(name).run_seconds.observe(seconds)

    def run_started(self) -> None:
        self.in_flight.inc()

    def run_ended(self) -> None:
        self.in_flight.dec()

    # Database-derived gauges.

    async def refresh_queue_stats(
        self,
        db: PoolSource,
        *,
        queues: Sequence[str] = (),
        max_age: float = 0.0,
        timeout: float = 10.0,
    ) -> bool:
        """Query queue depth and oldest due age, unless a refresh is running or the last
        one is younger than `max_age` seconds (several workers may share these metrics).
        Returns whether it queried. `queues` (a worker's) and queues seen before are
        reported as 0 when nothing is due on them.
        """
        self._known_queues.update(queues)
        if self._refreshing or time.monotonic() - self._refreshed_at < max_age:
            return False
        self._refreshing = True
        try:
            rows = await resolve_pool(db).fetch(QUEUE_STATS, timeout=timeout)
            self._refreshed_at = time.monotonic()
        finally:
            self._refreshing = False
        seen = set()
        for row in rows:
            queue = row["queue"]
            seen.add(queue)
            self.queue_depth.labels(queue).set(row["depth"])
            self.oldest_pending_age.labels(queue).set(row["oldest"])
        for queue in self._known_queues - seen:
            self.queue_depth.labels(queue).set(0)
            self.oldest_pending_age.labels(queue).set(0)
        self._known_queues |= seen
        return True


class QueueStatsRefresher:
    """Refreshes the queue gauges every `interval` seconds, for a process that serves
    /metrics but runs no worker (a worker holding the metrics refreshes them itself).
    """

    def __init__(self, db: PoolSource, metrics: TaskMetrics, *, interval: float = 15.0) -> None:
        self._db = db
        self.metrics = metrics
        self.interval = interval
        self._periodic = Periodic(self._refresh, interval, name="anchor-task-queue-stats")

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _refresh(self) -> None:
        await self.metrics.refresh_queue_stats(self._db, max_age=self.interval / 2)
