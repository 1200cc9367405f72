"""The small interface every queue adapter implements, so the harness treats them alike."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import ClassVar


class EngineNotReady(RuntimeError):
    """The system cannot be measured (missing or broken API): the harness prints a skipped row."""


class Adapter(abc.ABC):
    """One task system on one fresh database.

    Every adapter runs the same no-op task, whose body calls `started()` first: that counts
    executions (used only to pace the producer and to know when to poll the database
    tightly) and calls the latency hook `on_start` when the harness has set one. Completions
    are always counted by `completed_count()`, which queries the system's committed
    terminal state, never in-process counters.
    """

    name: ClassVar[str]
    #: How `completed_count()` counts, printed in the report.
    counts: ClassVar[str]

    def __init__(self) -> None:
        self.executed = 0
        self.on_start: Callable[[], None] | None = None
        self.notes: list[str] = []

    def started(self) -> None:
        """Called first thing by the no-op task body."""
        self.executed += 1
        if self.on_start is not None:
            self.on_start()

    @abc.abstractmethod
    async def setup(self, url: str) -> None:
        """Connect to the (fresh) database at `url` and install the system's schema."""

    @abc.abstractmethod
    async def enqueue_one(self) -> None:
        """Enqueue one no-op task in its own transaction; return after commit."""

    @abc.abstractmethod
    async def enqueue_batch(self, n: int) -> None:
        """Enqueue `n` no-op tasks with one call (one statement or transaction)."""

    @abc.abstractmethod
    async def start_workers(self, concurrency: int, batch_size: int) -> None:
        """Start in-process workers: at most `concurrency` tasks in flight, claims of `batch_size`."""

    @abc.abstractmethod
    async def completed_count(self) -> int:
        """Tasks whose terminal (success) state has been committed, read from the database."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Remove every task and log row (workers not running)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the workers (if started) and close every connection."""


async def cancel_task(task: asyncio.Task[object] | None, timeout: float = 5.0) -> bool:
    """Cancel `task`, wait at most `timeout` s for it; return False if it is still running."""
    if task is None:
        return True
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
    if task.done() and not task.cancelled():
        task.exception()  # mark it retrieved: the harness reports errors, not the loop
    return task.done()
