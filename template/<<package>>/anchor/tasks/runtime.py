"""Everything that runs tasks in one process, started and stopped as one piece.

The API process runs it in its lifespan (unless WORKER_ENABLED=false) and
`python -m <package> worker` runs it alone; both build it in the app's composition root.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence

from ..db import Database
from ..settings import Settings
from .contract import TaskDefinition, TaskFailedHook
from .metrics import TaskMetrics
from .pruner import Pruner
from .scheduler import CronScheduler
from .store import TaskStore
from .worker import Worker

log = logging.getLogger(__name__)


class TaskRuntime:
    """The worker, the cron scheduler and the pruner for `definitions`, configured from settings.

    Every process may run one: cron ticks fire once however many schedulers run, and only
    one pruner works at a time.
    """

    def __init__(
        self,
        db: Database,
        definitions: Mapping[str, TaskDefinition],
        settings: Settings,
        *,
        metrics: TaskMetrics | None = None,
        on_task_failed: Sequence[TaskFailedHook] = (),
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.worker = Worker(
            db,
            definitions,
            queues=settings.queues,
            labels=settings.labels,
            concurrency=settings.worker_concurrency,
            lease=dt.timedelta(seconds=settings.worker_lease),
            metrics=metrics,
            on_task_failed=on_task_failed,
        )
        self.scheduler = CronScheduler(db, definitions, TaskStore(db, metrics=metrics))
        self.pruner = Pruner(db, retention=dt.timedelta(days=settings.task_retention_days))

    async def start(self) -> None:
        await self.worker.start()
        await self.scheduler.start()
        await self.pruner.start()
        log.info(
            "task worker %s started: queues %s, concurrency %d",
            self.worker.id,
            ",".join(self.settings.queues),
            self.settings.worker_concurrency,
        )

    async def stop(self) -> None:
        await self.scheduler.stop()  # no new ticks, then let running tasks finish
        await self.pruner.stop()
        await self.worker.stop(grace=self.settings.worker_shutdown_grace)
        log.info("task worker %s stopped", self.worker.id)
