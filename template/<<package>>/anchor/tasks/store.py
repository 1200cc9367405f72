"""Enqueue and control tasks: the `Enqueuer` behind generated runners, plus cancel/retry/wait.

Every write is one statement. Enqueue NOTIFYs the task's queue channel in the same
statement; PostgreSQL delivers a NOTIFY on commit, so a task enqueued in the caller's
transaction wakes workers only once it is visible to them.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from .connections import PoolSource, resolve_pool
from .contract import TaskOptions
from .models import (
    TASK_COLUMNS,
    AttemptError,
    TaskCancelled,
    TaskFailed,
    TaskInfo,
    policy_to_json,
)

if TYPE_CHECKING:
    from ..db import Connection
    from .metrics import TaskMetrics

CANCEL_CHANNEL = "anchor_tasks_cancel"
DEFAULT_OPTIONS = TaskOptions()
_MAX_QUEUE_NAME = 48  # the channel name must stay under PostgreSQL's 63-byte identifier limit
_UNIQUE_RETRIES = 20


def queue_channel(queue: str) -> str:
    """The LISTEN/NOTIFY channel that announces new tasks on `queue`."""
    return f"anchor_tasks:{queue}"


@dataclass(frozen=True)
class TaskRequest:
    """One task for `enqueue_many`."""

    name: str
    params: Mapping[str, Any]
    options: TaskOptions = DEFAULT_OPTIONS


# `ON CONFLICT ... WHERE` repeats the predicate of the partial unique index
# anchor_tasks_unique_tag: a tag is taken while a task holding it is pending or running.
_ON_UNIQUE_CONFLICT = """ON CONFLICT (unique_tag)
        WHERE unique_tag IS NOT NULL AND state IN ('pending', 'running') DO NOTHING"""

_INSERT = f"""
WITH inserted AS (
    INSERT INTO anchor_tasks (name, queue, params, priority, run_at, max_attempts, retry_policy,
                              timeout, unique_tag, serial_key, labels, parent_id)
    VALUES ($1, $2, $3::text::jsonb, $4, COALESCE($5::timestamptz, now() + $6::interval), $7,
            $8::text::jsonb, $9::interval, $10, $11, $12::text[], $13)
    {_ON_UNIQUE_CONFLICT}
    RETURNING id, queue
)
SELECT id, pg_notify('anchor_tasks:' || queue, '') FROM inserted
"""

_INSERT_MANY = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[],
                         $6::interval[], $7::int[], $8::text[], $9::interval[], $10::text[],
                         $11::text[], $12::text[], $13::bigint[])
        WITH ORDINALITY AS i(name, queue, params, priority, run_at, delay, max_attempts,
                             retry_policy, timeout, unique_tag, serial_key, labels, parent_id, ord)
), inserted AS (
    INSERT INTO anchor_tasks (name, queue, params, priority, run_at, max_attempts, retry_policy,
                              timeout, unique_tag, serial_key, labels, parent_id)
    SELECT name, queue, params::jsonb, priority, COALESCE(run_at, now() + delay), max_attempts,
           retry_policy::jsonb, timeout, unique_tag, serial_key,
           ARRAY(SELECT jsonb_array_elements_text(labels::jsonb)), parent_id
    FROM input ORDER BY ord
    {_ON_UNIQUE_CONFLICT}
    RETURNING id, queue, unique_tag, name
), notified AS (
    SELECT count(pg_notify('anchor_tasks:' || queue, '')) AS n
    FROM (SELECT DISTINCT queue FROM inserted) AS queues
)
SELECT id, unique_tag, name FROM inserted, notified ORDER BY id
"""

_ACTIVE_BY_TAG = """
SELECT id FROM anchor_tasks WHERE unique_tag = $1 AND state IN ('pending', 'running')
"""

_CANCEL = """
WITH RECURSIVE tree AS (
    SELECT $1::bigint AS id
    UNION
    SELECT t.id FROM anchor_tasks t JOIN tree ON t.parent_id = tree.id WHERE $2
), cancelled AS (
    UPDATE anchor_tasks t
    SET state = 'cancelled', finished_at = clock_timestamp(),
        lease_owner = NULL, lease_expires_at = NULL
    FROM tree
    WHERE t.id = tree.id AND t.state IN ('pending', 'running')
    RETURNING t.id
)
SELECT id, pg_notify('anchor_tasks_cancel', id::text) FROM cancelled
"""

_RETRY = """
WITH retried AS (
    UPDATE anchor_tasks
    SET state = 'pending', attempts = 0, run_at = now(), finished_at = NULL, result = NULL
    WHERE id = $1 AND state IN ('failed', 'cancelled')
    RETURNING queue
)
SELECT pg_notify('anchor_tasks:' || queue, '') FROM retried
"""


class TaskConflict(Exception):
    """A retry would make a second active task with the same unique tag."""


class TaskStore:
    """Stores tasks and controls them; the `Enqueuer` generated runners call."""

    def __init__(self, db: PoolSource, *, metrics: TaskMetrics | None = None) -> None:
        self._db = db
        self._metrics = metrics  # metrics: None records nothing

    async def enqueue(
        self,
        name: str,
        params: Mapping[str, Any],
        options: TaskOptions = DEFAULT_OPTIONS,
        *,
        tx: Connection | None = None,
    ) -> int:
        """Insert a task and return its id, or the id of the active task holding its unique tag.

        Race-safe: concurrent enqueues of one tag insert one row and all return its id. When
        the holder finishes between our conflict and our lookup, the insert is tried again.
        """
        conn: Any = tx if tx is not None else resolve_pool(self._db)
        args = _row_args(name, params, options)
        for _ in range(_UNIQUE_RETRIES):
            task_id = await conn.fetchval(_INSERT, *args)
            if task_id is not None:
                if self._metrics is not None:  # metrics
                    self._metrics.record_enqueued(name)
                return int(task_id)
            existing = await conn.fetchval(_ACTIVE_BY_TAG, options.unique_tag)
            if existing is not None:
                return int(existing)
        raise RuntimeError(f"unique tag {options.unique_tag!r} kept changing hands; giving up")

    async def enqueue_many(
        self, requests: Sequence[TaskRequest], *, tx: Connection | None = None
    ) -> list[int]:
        """Insert many tasks in one statement; ids come back in request order.

        Requests whose unique tag is taken (by an active task or earlier in the batch) get
        that task's id, as with `enqueue`.
        """
        if not requests:
            return []
        conn: Any = tx if tx is not None else resolve_pool(self._db)
        rows = [_row_args(r.name, r.params, r.options) for r in requests]
        columns = [list(column) for column in zip(*rows, strict=True)]
        columns[11] = [json.dumps(labels) for labels in columns[11]]  # ragged text[] as json
        inserted = await conn.fetch(_INSERT_MANY, *columns)
        if self._metrics is not None:  # metrics: the rows this statement inserted, per name
            for task_name, count in collections.Counter(r["name"] for r in inserted).items():
                self._metrics.record_enqueued(task_name, count)
        # One statement numbers its rows in ORDER BY ord order, so untagged requests take the
        # untagged ids in ascending order; tagged requests are matched by their tag.
        untagged = iter([r["id"] for r in inserted if r["unique_tag"] is None])
        by_tag = {r["unique_tag"]: r["id"] for r in inserted if r["unique_tag"] is not None}
        ids: list[int] = []
        for request in requests:
            tag = request.options.unique_tag
            if tag is None:
                ids.append(int(next(untagged)))
            elif tag in by_tag:
                ids.append(int(by_tag[tag]))
            else:  # held by an older active task (or freed meanwhile: enqueue handles both)
                task_id = await self.enqueue(request.name, request.params, request.options, tx=tx)
                by_tag[tag] = task_id
                ids.append(task_id)
        return ids

    async def cancel(
        self, task_id: int, *, cascade: bool = True, tx: Connection | None = None
    ) -> list[int]:
        """Cancel a pending or running task (and its active descendants); return the ids
        cancelled. A worker running one of them is told by NOTIFY and stops its executor;
        its completion is fenced off, so the executor's transaction rolls back.
        """
        conn: Any = tx if tx is not None else resolve_pool(self._db)
        rows = await conn.fetch(_CANCEL, task_id, cascade)
        return [int(r["id"]) for r in rows]

    async def retry(self, task_id: int) -> bool:
        """Run a failed or cancelled task again, with a fresh attempt budget."""
        try:
            rows = await resolve_pool(self._db).fetch(_RETRY, task_id)
        except asyncpg.UniqueViolationError as exc:
            raise TaskConflict(f"task {task_id}: another active task holds its unique tag") from exc
        return bool(rows)

    async def get(self, task_id: int) -> TaskInfo | None:
        row = await resolve_pool(self._db).fetchrow(
            f"SELECT {TASK_COLUMNS} FROM anchor_tasks WHERE id = $1", task_id
        )
        return None if row is None else TaskInfo.from_record(row)

    async def attempt_errors(self, task_id: int) -> list[AttemptError]:
        """Every failed attempt of a task, oldest first."""
        rows = await resolve_pool(self._db).fetch(
            """SELECT attempt, kind, error, worker, created_at FROM anchor_task_attempts
               WHERE task_id = $1 ORDER BY attempt, id""",
            task_id,
        )
        return [AttemptError(**dict(r)) for r in rows]

    async def wait(
        self, task_id: int, timeout: float | None = None, *, poll_interval: float = 0.5
    ) -> Any:
        """Wait until the task finishes and return its stored result.

        Raises `TaskFailed` (with the last error), `TaskCancelled`, `LookupError` for an
        unknown id, or `TimeoutError`. Polls, starting fast and backing off to `poll_interval`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            task = await self.get(task_id)
            if task is None:
                raise LookupError(f"no task with id {task_id}")
            if task.state == "completed":
                return task.result
            if task.state == "failed":
                raise TaskFailed(task)
            if task.state == "cancelled":
                raise TaskCancelled(task)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"task {task_id} still {task.state} after {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, poll_interval)


def _row_args(name: str, params: Mapping[str, Any], options: TaskOptions) -> tuple[Any, ...]:
    """The column values of one task, in the order `_INSERT` and `_INSERT_MANY` take them."""
    if not name:
        raise ValueError("task name must not be empty")
    if not options.queue or len(options.queue.encode()) > _MAX_QUEUE_NAME:
        raise ValueError(f"queue name must be 1 to {_MAX_QUEUE_NAME} bytes: {options.queue!r}")
    policy = options.retry_policy
    if policy.max_attempts != -1 and policy.max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 or -1 (unlimited): {policy.max_attempts}")
    return (
        name,
        options.queue,
        json.dumps(params),
        options.priority,
        options.run_at,
        options.delay or dt.timedelta(),
        policy.max_attempts,
        policy_to_json(policy),
        options.timeout,
        options.unique_tag,
        options.serial_key,
        list(options.labels),
        options.parent_id,
    )
