"""Batches the completions of tasks that never used their transaction.

A no-op or side-effect-free task needs no transaction of its own: its completion waits a
few milliseconds in a buffer and is written with many others in one fenced UPDATE. Until
the flush, the worker still owns (and heartbeats) the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from . import leases
from .connections import Pool

log = logging.getLogger(__name__)

# (task id, attempt, result as JSON text or None)
Completion = tuple[int, int, str | None]


class Completer:
    def __init__(
        self, pool: Callable[[], Pool], owner: str, *, interval: float, batch_size: int
    ) -> None:
        self._pool = pool
        self._owner = owner
        self._interval = interval
        self._batch_size = batch_size
        self._buffer: list[Completion] = []
        self._flushing: list[Completion] = []
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()

    def add(self, task_id: int, attempt: int, result: str | None) -> None:
        self._buffer.append((task_id, attempt, result))
        self._ready.set()

    def owned(self) -> list[tuple[int, int]]:
        """Tasks completed in memory but not yet in the database (still to heartbeat)."""
        return [(c[0], c[1]) for c in (*self._flushing, *self._buffer)]

    async def run(self) -> None:
        """Flush every `interval` while completions arrive, at once when a batch is full."""
        while True:
            await self._ready.wait()
            if len(self._buffer) < self._batch_size:
                await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("flushing task completions failed; retrying")
                await asyncio.sleep(0.5)

    async def flush(self) -> None:
        """Write the buffered completions; on error they go back to the buffer."""
        async with self._lock:
            self._ready.clear()
            while self._buffer:
                self._flushing, self._buffer = (
                    self._buffer[: self._batch_size * 4],
                    self._buffer[self._batch_size * 4 :],
                )
                batch = self._flushing
                try:
                    await self._pool().execute(
                        leases.COMPLETE_MANY,
                        [c[0] for c in batch],
                        [c[1] for c in batch],
                        [c[2] for c in batch],
                        self._owner,
                    )
                except BaseException:
                    self._buffer[:0] = batch
                    self._ready.set()
                    raise
                finally:
                    self._flushing = []
