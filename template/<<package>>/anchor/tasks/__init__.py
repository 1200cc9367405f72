"""Anchor's PostgreSQL task engine: durable tasks with retries, leases, priorities and
transactional enqueue and completion.

`TaskStore` enqueues and controls tasks (it is the `Enqueuer` generated runners use);
`Worker` runs them; `schema.migrate` creates the tables.
"""

from .contract import (
    Enqueuer,
    FailedTask,
    RetryPolicy,
    TaskContext,
    TaskDefinition,
    TaskFailedHook,
    TaskOptions,
    TaskOverrides,
    Transaction,
)
from .cron import CronExpression, next_fire_times, parse_cron
from .durations import format_duration, parse_duration, retry_delay
from .metrics import TaskMetrics
from .models import AttemptError, TaskCancelled, TaskError, TaskFailed, TaskInfo, TaskState
from .pruner import Pruner
from .scheduler import CronScheduler
from .schema import MIGRATIONS_DIR, MIGRATIONS_TABLE, migrate
from .store import TaskConflict, TaskRequest, TaskStore
from .worker import RunContext, Worker

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATIONS_TABLE",
    "AttemptError",
    "CronExpression",
    "CronScheduler",
    "Enqueuer",
    "FailedTask",
    "Pruner",
    "RetryPolicy",
    "RunContext",
    "TaskCancelled",
    "TaskConflict",
    "TaskContext",
    "TaskDefinition",
    "TaskError",
    "TaskFailed",
    "TaskFailedHook",
    "TaskInfo",
    "TaskMetrics",
    "TaskOptions",
    "TaskOverrides",
    "TaskRequest",
    "TaskState",
    "TaskStore",
    "Transaction",
    "Worker",
    "format_duration",
    "migrate",
    "next_fire_times",
    "parse_cron",
    "parse_duration",
    "retry_delay",
]
