"""Everything that runs tasks in one process, started and stopped as one piece.

The API process runs it in its lifespan (unless WORKER_ENABLED=false) and
`python -m <package> worker` runs it alone; both build it in the app's composition root.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..db import Database
from ..settings import Settings
from .contract import TaskDefinition
from .worker import Worker

log = logging.getLogger(__name__)


class TaskRuntime:
    """The worker for `definitions`, configured from settings."""

    def __init__(
        self, db: Database, definitions: Mapping[str, TaskDefinition], settings: Settings
    ) -> None:
        self.db = db
        self.settings = settings
        self.worker = Worker(
            db,
            definitions,
            queues=settings.queues,
            concurrency=settings.worker_concurrency,
        )

    async def start(self) -> None:
        await self.worker.start()
        log.info(
            "task worker %s started: queues %s, concurrency %d",
            self.worker.id,
            ",".join(self.settings.queues),
            self.settings.worker_concurrency,
        )

    async def stop(self) -> None:
        await self.worker.stop(grace=self.settings.worker_shutdown_grace)
        log.info("task worker %s stopped", self.worker.id)
