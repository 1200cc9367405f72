"""The contract between generated task code (gen/tasks) and the task engine (anchor.tasks).

`make gen` renders, from api/tasks.yaml, a typed `TaskRunner` that calls `Enqueuer.enqueue`,
and a `TaskExecutors` interface whose methods become `TaskDefinition.execute` callbacks.
The engine knows nothing about the generated types: it sees task names, JSON params and
these options.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from ..db import Connection


@dataclass(frozen=True)
class RetryPolicy:
    """When to run a failed attempt again.

    `intervals` are the waits before attempt 2, 3, ...; the last one repeats. With
    `backoff` set, the wait doubles from `intervals[0]` up to `max_interval`, with up to
    `jitter` (a fraction) added at random. `max_attempts` counts runs; -1 means unlimited.
    """

    intervals: tuple[dt.timedelta, ...] = ()
    max_attempts: int = 1
    backoff: bool = False
    max_interval: dt.timedelta | None = None
    jitter: float = 0.0


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings: defaults from tasks.yaml, overridden per call."""

    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: dt.timedelta | None = None
    priority: int = 0  # higher runs first
    delay: dt.timedelta | None = None
    run_at: dt.datetime | None = None  # wins over delay
    unique_tag: str | None = None
    serial_key: str | None = None
    queue: str = "default"
    labels: tuple[str, ...] = ()
    parent_id: int | None = None


class TaskOverrides(TypedDict, total=False):
    """Keyword overrides accepted by every generated `run_<task>(...)` method."""

    retry_policy: RetryPolicy
    timeout: dt.timedelta
    priority: int
    delay: dt.timedelta
    run_at: dt.datetime
    unique_tag: str
    serial_key: str
    queue: str
    labels: Sequence[str]
    parent_id: int


def with_overrides(defaults: TaskOptions, overrides: TaskOverrides) -> TaskOptions:
    """`defaults` (from tasks.yaml) with the per-call `overrides` in place of what they name."""
    if not overrides:
        return defaults
    changes: dict[str, Any] = dict(overrides)
    if "labels" in changes:
        changes["labels"] = tuple(changes["labels"])
    return dataclasses.replace(defaults, **changes)


class Enqueuer(Protocol):
    """What generated runners need from the engine."""

    async def enqueue(
        self,
        name: str,
        params: Mapping[str, Any],
        options: TaskOptions,
        *,
        tx: Connection | None = None,
    ) -> int:
        """Store a task and return its id (an existing active task's id for a taken unique tag).

        With `tx`, the task is written in the caller's transaction: invisible until commit,
        gone on rollback.
        """
        ...


class TaskContext(Protocol):
    """What an executor knows about the attempt it runs."""

    task_id: int
    attempt: int
    name: str


class Transaction(Protocol):
    """The executor's transaction, begun lazily on the first query.

    It commits together with the row that marks the task completed, so the executor's
    database effects happen exactly once; a task that never queries holds no connection.
    Generated `Queries(tx)` accept it like a pool or connection.
    """

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...
    async def executemany(
        self, command: str, args: Any, *, timeout: float | None = None
    ) -> None: ...
    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...
    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any: ...
    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str: ...


Execute = Callable[[TaskContext, Transaction, Mapping[str, Any]], Awaitable[Any]]
OnFailed = Callable[["Connection", int, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class FailedTask:
    """A task that failed for good (no attempts left), as `on_task_failed` hooks see it."""

    id: int
    name: str
    params: Mapping[str, Any]
    error: str


# Runs in the transaction that records the failure, like a task's own `onFailed`.
TaskFailedHook = Callable[["Connection", FailedTask], Awaitable[None]]


@dataclass(frozen=True)
class TaskDefinition:
    """One task type as the worker runs it: built by generated code from tasks.yaml."""

    name: str
    options: TaskOptions
    execute: Execute
    on_failed: OnFailed | None = None
    cron: str | None = None  # 5 fields, or 6 with seconds first
    cron_params: Mapping[str, Any] = field(default_factory=dict)  # what each scheduled run gets
