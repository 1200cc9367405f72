"""What the task tables hold, as Python values: task snapshots, attempt errors, outcomes.

Rows are read with `jsonb::text` and decoded here, so the engine works the same whether or
not the pool registered json codecs (the generated `register_codecs` does).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from .contract import RetryPolicy

TaskState = Literal["pending", "running", "completed", "failed", "cancelled"]
ACTIVE_STATES: tuple[TaskState, ...] = ("pending", "running")
FINISHED_STATES: tuple[TaskState, ...] = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task row."""

    id: int
    name: str
    queue: str
    params: Mapping[str, Any]
    state: TaskState
    priority: int
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    unique_tag: str | None
    serial_key: str | None
    labels: tuple[str, ...]
    parent_id: int | None
    result: Any
    last_error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> TaskInfo:
        return cls(
            id=row["id"],
            name=row["name"],
            queue=row["queue"],
            params=json.loads(row["params"]),
            state=row["state"],
            priority=row["priority"],
            run_at=row["run_at"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            unique_tag=row["unique_tag"],
            serial_key=row["serial_key"],
            labels=tuple(row["labels"]),
            parent_id=row["parent_id"],
            result=None if row["result"] is None else json.loads(row["result"]),
            last_error=row["last_error"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )


TASK_COLUMNS = """id, name, queue, params::text AS params, state, priority, run_at, attempts,
    max_attempts, unique_tag, serial_key, labels, parent_id, result::text AS result,
    last_error, created_at, started_at, finished_at"""


@dataclass(frozen=True)
class AttemptError:
    """One failed attempt: `kind` is error, timeout or lease_expired."""

    attempt: int
    kind: str
    error: str
    worker: str | None
    created_at: dt.datetime


class TaskError(Exception):
    """Base of the outcomes `TaskStore.wait` raises."""

    def __init__(self, task: TaskInfo, message: str) -> None:
        super().__init__(message)
        self.task = task


class TaskFailed(TaskError):
    """The task failed permanently; `last_error` is its final attempt's error."""

    def __init__(self, task: TaskInfo) -> None:
        limit = "unlimited" if task.max_attempts == -1 else str(task.max_attempts)
        super().__init__(
            task,
            f"task {task.name} failed (id={task.id} attempts={task.attempts} "
            f"max_attempts={limit}): {task.last_error}",
        )
        self.last_error = task.last_error


class TaskCancelled(TaskError):
    def __init__(self, task: TaskInfo) -> None:
        super().__init__(task, f"task {task.name} was cancelled (id={task.id})")


def policy_to_json(policy: RetryPolicy) -> str:
    """The retry policy as stored per task (a call may override the spec's default)."""
    return json.dumps(
        {
            "intervals": [i.total_seconds() for i in policy.intervals],
            "backoff": policy.backoff,
            "max_interval": (
                None if policy.max_interval is None else policy.max_interval.total_seconds()
            ),
            "jitter": policy.jitter,
        }
    )


def policy_from_json(text: str, max_attempts: int) -> RetryPolicy:
    data = json.loads(text)
    max_interval = data.get("max_interval")
    return RetryPolicy(
        intervals=tuple(dt.timedelta(seconds=s) for s in data.get("intervals", ())),
        max_attempts=max_attempts,
        backoff=bool(data.get("backoff", False)),
        max_interval=None if max_interval is None else dt.timedelta(seconds=max_interval),
        jitter=float(data.get("jitter", 0.0)),
    )
