"""A job run every few seconds in one background task (the pruner, the queue gauges)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .connections import DB_ERRORS

log = logging.getLogger(__name__)


class Periodic:
    """Runs `job` at once and then every `interval` seconds, from `start()` until `stop()`.

    A database error is logged and the next round tries again, so an outage never ends it.
    """

    def __init__(self, job: Callable[[], Awaitable[object]], interval: float, *, name: str) -> None:
        self.job = job
        self.interval = interval
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name} already started")
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop, interrupting the job if it is running."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.job()
            except DB_ERRORS as exc:
                log.warning("%s failed: %r", self.name, exc)
            await asyncio.sleep(self.interval)
