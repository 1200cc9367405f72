"""Operating tasks from the command line: `python -m <package> tasks list|show|retry|cancel`.

The queries and formatting are plain async functions (usable from a shell or an admin
endpoint); `add_task_commands` and `run_task_command` mount them on the project's argparse
CLI. Problems (unknown id, wrong state, no database) are one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO, get_args

import asyncpg

from .connections import PoolSource, resolve_pool
from .durations import format_duration
from .models import TASK_COLUMNS, AttemptError, TaskInfo, TaskState
from .store import TaskConflict, TaskStore

STATES: tuple[str, ...] = get_args(TaskState)
ERROR_WIDTH = 60  # last_error is cut to this many characters in `list`


@dataclass(frozen=True)
class TaskDetails:
    """Everything `show` prints: the task, the columns `TaskInfo` leaves out, its attempts."""

    task: TaskInfo
    retry_policy: Any
    timeout: dt.timedelta | None
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    attempts: list[AttemptError]


# Queries


async def list_tasks(
    db: PoolSource,
    *,
    state: str | None = None,
    name: str | None = None,
    queue: str | None = None,
    limit: int = 50,
) -> list[TaskInfo]:
    """The newest tasks first, filtered by whichever of state, name and queue are given."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    conditions: list[str] = []
    args: list[Any] = []
    for column, value in (("state", state), ("name", name), ("queue", queue)):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    rows = await resolve_pool(db).fetch(
        f"SELECT {TASK_COLUMNS} FROM anchor_tasks {where} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return [TaskInfo.from_record(row) for row in rows]


async def task_details(db: PoolSource, task_id: int) -> TaskDetails | None:
    row = await resolve_pool(db).fetchrow(
        f"""SELECT {TASK_COLUMNS}, retry_policy::text AS retry_policy, timeout, lease_owner,
                   lease_expires_at
            FROM anchor_tasks WHERE id = $1""",
        task_id,
    )
    if row is None:
        return None
    return TaskDetails(
        task=TaskInfo.from_record(row),
        retry_policy=json.loads(row["retry_policy"]),
        timeout=row["timeout"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        attempts=await TaskStore(db).attempt_errors(task_id),
    )


# Formatting


def format_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_attempts(task: TaskInfo) -> str:
    limit = "inf" if task.max_attempts == -1 else str(task.max_attempts)
    return f"{task.attempts}/{limit}"


def one_line(text: str | None, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_table(tasks: Sequence[TaskInfo], *, error_width: int = ERROR_WIDTH) -> str:
    """A compact table: id, name, state, attempts/max, queue, run_at, last error."""
    header = ("ID", "NAME", "STATE", "ATTEMPTS", "QUEUE", "RUN_AT", "LAST_ERROR")
    rows = [
        (
            str(t.id),
            t.name,
            t.state,
            format_attempts(t),
            t.queue,
            format_time(t.run_at),
            one_line(t.last_error, error_width),
        )
        for t in tasks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def format_details(details: TaskDetails) -> str:
    t = details.task
    fields: list[tuple[str, str]] = [
        ("id", str(t.id)),
        ("name", t.name),
        ("state", t.state),
        ("queue", t.queue),
        ("priority", str(t.priority)),
        ("attempts", format_attempts(t)),
        ("run_at", format_time(t.run_at)),
        ("created_at", format_time(t.created_at)),
        ("started_at", format_time(t.started_at)),
        ("finished_at", format_time(t.finished_at)),
        ("timeout", "-" if details.timeout is None else format_duration(details.timeout)),
        ("retry_policy", json.dumps(details.retry_policy, sort_keys=True)),
        ("unique_tag", t.unique_tag or "-"),
        ("serial_key", t.serial_key or "-"),
        ("labels", ", ".join(t.labels) or "-"),
        ("parent_id", "-" if t.parent_id is None else str(t.parent_id)),
        ("lease_owner", details.lease_owner or "-"),
        ("lease_expires_at", format_time(details.lease_expires_at)),
        ("last_error", t.last_error or "-"),
    ]
    width = max(len(label) for label, _ in fields) + 1
    lines = [
        f"{(label + ':').ljust(width)} {value}".replace("\n", "\n" + " " * (width + 1))
        for label, value in fields
    ]
    for label, value in (("params", t.params), ("result", t.result)):
        lines.append(f"{label}:")
        lines.extend(f"  {line}" for line in _json(value).splitlines())
    lines.append(f"attempt errors: {len(details.attempts) or 'none'}")
    for a in details.attempts:
        lines.append(f"  #{a.attempt}  {format_time(a.created_at)}  {a.kind}  {a.worker or '-'}")
        lines.extend(f"      {line}" for line in a.error.splitlines() or [""])
    return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# Commands: each prints its output and returns the exit code.


class CommandError(Exception):
    """A problem reported in one line on stderr with exit code 1."""


async def list_command(
    db: PoolSource,
    *,
    state: str | None = None,
    name: str | None = None,
    queue: str | None = None,
    limit: int = 50,
    out: TextIO | None = None,
) -> int:
    tasks = await list_tasks(db, state=state, name=name, queue=queue, limit=limit)
    print(format_table(tasks) if tasks else "no tasks", file=out or sys.stdout)
    return 0


async def show_command(db: PoolSource, task_id: int, *, out: TextIO | None = None) -> int:
    details = await task_details(db, task_id)
    if details is None:
        raise CommandError(f"no task with id {task_id}")
    print(format_details(details), file=out or sys.stdout)
    return 0


async def retry_command(db: PoolSource, task_id: int, *, out: TextIO | None = None) -> int:
    store = TaskStore(db)
    try:
        retried = await store.retry(task_id)
    except TaskConflict as exc:
        raise CommandError(f"{exc}; cancel that task first or wait for it to finish") from exc
    if not retried:
        task = await store.get(task_id)
        if task is None:
            raise CommandError(f"no task with id {task_id}")
        raise CommandError(
            f"task {task_id} is {task.state}; only failed or cancelled tasks can be retried"
        )
    print(f"task {task_id} is pending again (attempts reset)", file=out or sys.stdout)
    return 0


async def cancel_command(
    db: PoolSource, task_id: int, *, cascade: bool = True, out: TextIO | None = None
) -> int:
    store = TaskStore(db)
    cancelled = await store.cancel(task_id, cascade=cascade)
    if task_id not in cancelled:
        task = await store.get(task_id)
        if task is None:
            raise CommandError(f"no task with id {task_id}")
        raise CommandError(
            f"task {task_id} is {task.state}; only pending or running tasks can be cancelled"
        )
    stream = out or sys.stdout
    print(f"cancelled task {task_id}", file=stream)
    descendants = sorted(i for i in cancelled if i != task_id)
    if descendants:
        print(f"cancelled descendants: {', '.join(map(str, descendants))}", file=stream)
    return 0


# argparse wiring


def add_task_commands(subparsers: Any) -> None:
    """Add `tasks list|show|retry|cancel` to the CLI's subparsers (`add_subparsers()`)."""
    tasks = subparsers.add_parser("tasks", help="inspect and control background tasks")
    commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list tasks, newest first")
    listing.add_argument("--state", choices=STATES, help="only tasks in this state")
    listing.add_argument("--name", help="only tasks of this name")
    listing.add_argument("--queue", help="only tasks of this queue")
    listing.add_argument("--limit", type=_positive, default=50, help="at most N (default 50)")

    show = commands.add_parser("show", help="every field of a task and its attempt errors")
    show.add_argument("id", type=int, help="task id")

    retry = commands.add_parser("retry", help="run a failed or cancelled task again")
    retry.add_argument("id", type=int, help="task id")

    cancel = commands.add_parser("cancel", help="cancel a pending or running task")
    cancel.add_argument("id", type=int, help="task id")
    cancel.add_argument(
        "--no-cascade",
        dest="cascade",
        action="store_false",
        help="leave the task's active descendants alone",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


async def run_task_command(args: argparse.Namespace, url: str) -> int:
    """Run the `tasks` command `args` parsed against the database at `url`; the exit code."""
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        print(f"error: cannot connect to the database: {exc}", file=sys.stderr)
        return 1
    try:
        return await _dispatch(pool, args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except asyncpg.UndefinedTableError:
        print(
            "error: the task tables do not exist yet (the server creates them on start)",
            file=sys.stderr,
        )
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: database error: {exc}", file=sys.stderr)
        return 1
    finally:
        await pool.close()


async def _dispatch(db: PoolSource, args: argparse.Namespace) -> int:
    command = args.tasks_command
    if command == "list":
        return await list_command(
            db, state=args.state, name=args.name, queue=args.queue, limit=args.limit
        )
    if command == "show":
        return await show_command(db, args.id)
    if command == "retry":
        return await retry_command(db, args.id)
    if command == "cancel":
        return await cancel_command(db, args.id, cascade=args.cascade)
    raise CommandError(f"unknown tasks command {command!r}")
