"""The cron scheduler: enqueues a task for each tick of every task with a `cronjob`.

The schedule lives in the database (`anchor_cron_schedules`), not in memory, so a deploy or
crash loses nothing, and any number of processes may run a scheduler at once:

- **Registration** (`start()`): every definition with a cron is upserted. A new or changed
  expression (or a schedule that was disabled) starts at its next tick after now; an
  unchanged one keeps its `next_run_at`, so ticks missed while nothing ran are caught up.
  Schedules of tasks that no longer have a cron are disabled (kept, for their history).
  The database row is the source of truth: the last process to register wins.
- **Firing**: each due schedule is moved on with a compare-and-set
  (`UPDATE ... SET next_run_at = <following tick> WHERE name = $1 AND next_run_at = <due>`)
  and, only if that updated the row, its task is enqueued in the same transaction with
  `run_at` = the tick, the definition's options and params `{}`. Two schedulers that see the
  same due tick cannot both update the row, so each tick is enqueued exactly once; a crash
  between the two writes rolls both back and the tick stays due.
- **Catch-up**: after downtime, the missed ticks are run ONCE, as a single task whose
  `run_at` is the latest missed tick; the schedule then continues from the first tick after
  now. With `catch_up_window` set, that latest missed tick runs only if it is at most that
  late; otherwise it is skipped too (for sparse schedules whose late runs are pointless).
- **Outcomes do not matter**: a tick is a task of its own. A failing run follows its retry
  policy and then fails, a slow run keeps running, and neither stops or delays later ticks.
  Overlapping runs are therefore allowed; give the task a `serial_key` to run them one at a
  time (a backlog builds if runs are slower than ticks), or a `unique_tag` to skip ticks
  while a run is still pending or running. A retry moves the task's `run_at` on; the tick
  of the latest run stays in `anchor_cron_schedules.last_run_at`.

Times are UTC (see `cron.py` for the expression forms). The scheduler sleeps until the
earliest `next_run_at`, at most `tick_resolution` seconds, so it also notices schedules
changed by other processes within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Mapping

from .connections import Pool, PoolSource, resolve_pool
from .contract import Enqueuer, TaskDefinition
from .cron import CronExpression, parse_cron

log = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0

# Registrations from several processes are serialised: their upserts and disables touch
# overlapping rows in different orders and would otherwise deadlock.
_REGISTER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('anchor_cron_schedules'))"

_REGISTER = """
INSERT INTO anchor_cron_schedules AS s (name, expression, next_run_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (name) DO UPDATE
    SET expression = EXCLUDED.expression, next_run_at = EXCLUDED.next_run_at,
        enabled = true, updated_at = now()
    WHERE NOT s.enabled OR s.expression <> EXCLUDED.expression
RETURNING name, expression, next_run_at
"""

# $1: the names with a cron; $2: disable every other schedule, or only those of $3.
_DISABLE = """
UPDATE anchor_cron_schedules SET enabled = false, updated_at = now()
WHERE enabled AND NOT (name = ANY($1::text[])) AND ($2 OR name = ANY($3::text[]))
RETURNING name
"""

_DUE = """
SELECT name, expression, next_run_at, clock_timestamp() AS now
FROM anchor_cron_schedules
WHERE enabled AND name = ANY($1::text[])
ORDER BY next_run_at
"""

_NOW = "SELECT clock_timestamp()"

# The compare-and-set: only the transaction that moves this exact tick on may enqueue it.
_ADVANCE = """
UPDATE anchor_cron_schedules SET next_run_at = $4
WHERE name = $1 AND next_run_at = $2 AND expression = $3 AND enabled
"""

_RECORD_RUN = """
UPDATE anchor_cron_schedules SET last_run_at = $2, last_task_id = $3 WHERE name = $1
"""


class CronScheduler:
    """Enqueues the tasks of `definitions` that have a `cron`, tick by tick, through `store`.

    Run one in every process that runs a `Worker` (or anywhere else): each tick is enqueued
    once however many run. `store` must write into the `tx` it is given (`TaskStore` does).
    A bad expression raises ValueError here, before anything touches the database.
    """

    def __init__(
        self,
        db: PoolSource,
        definitions: Mapping[str, TaskDefinition],
        store: Enqueuer,
        *,
        tick_resolution: float = 1.0,
        catch_up_window: dt.timedelta | None = None,
        disable_unlisted: bool = True,
        scheduler_id: str | None = None,
    ) -> None:
        """`tick_resolution`: the longest sleep between looks at the schedule table.
        `catch_up_window`: how late a tick may still run (None: always run one catch-up).
        `disable_unlisted`: also disable schedules of tasks absent from `definitions` (turn
        it off when services with different task sets share one database).
        """
        if tick_resolution <= 0:
            raise ValueError("tick_resolution must be > 0")
        if catch_up_window is not None and catch_up_window < dt.timedelta():
            raise ValueError("catch_up_window must not be negative")
        self._db = db
        self._store = store
        self.definitions = dict(definitions)
        self.crons: dict[str, CronExpression] = {}
        for name, definition in self.definitions.items():
            if definition.cron is not None:
                try:
                    self.crons[name] = parse_cron(definition.cron)
                except ValueError as exc:
                    raise ValueError(f"task {name!r}: {exc}") from exc
        self.tick_resolution = tick_resolution
        self.catch_up_window = catch_up_window
        self.disable_unlisted = disable_unlisted
        self.id = scheduler_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._bad_rows: set[tuple[str, str]] = set()

    def _pool(self) -> Pool:
        return resolve_pool(self._db)

    # Lifecycle

    async def start(self) -> None:
        """Register the schedules (errors raise here), then fire ticks in the background."""
        if self._started:
            raise RuntimeError("cron scheduler already started")
        self._started = True
        await self.register()
        if self.crons:  # without any, registering (disabling stale schedules) was all to do
            self._loop_task = asyncio.create_task(self._loop(), name=f"anchor-cron-{self.id}")

    async def run(self) -> None:
        """Start and return when `stop()` has finished."""
        await self.start()
        await self._stopped.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop firing; a tick being enqueued gets `grace` seconds to commit, then rolls back
        (and stays due for the next scheduler).
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            done, _ = await asyncio.wait([self._loop_task], timeout=grace)
            if not done:
                self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        self._stopped.set()

    # Registration

    async def register(self) -> None:
        """Upsert every cron definition's schedule and disable the schedules of tasks that no
        longer have one. Safe to run from many processes at once.
        """
        names = sorted(self.crons)
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(_REGISTER_LOCK)
            now: dt.datetime = await conn.fetchval(_NOW)
            changed = await conn.fetch(
                _REGISTER,
                names,
                [self.crons[n].expression for n in names],
                [self.crons[n].next_after(now) for n in names],
            )
            disabled = await conn.fetch(
                _DISABLE, names, self.disable_unlisted, list(self.definitions)
            )
        for row in changed:
            log.info(
                "cron %s: scheduled %r, next run at %s",
                row["name"],
                row["expression"],
                row["next_run_at"].isoformat(),
            )
        for row in disabled:
            log.info("cron %s: disabled (the task has no cron any more)", row["name"])

    # Firing

    async def run_due(self) -> int:
        """Enqueue every schedule that is due now; return how many ticks this call enqueued
        (ticks another scheduler took first are not counted).
        """
        fired, _ = await self._run_due()
        return fired

    async def _run_due(self) -> tuple[int, float]:
        """Fire what is due; return (ticks enqueued, seconds until the next look)."""
        rows = await self._pool().fetch(_DUE, list(self.crons))
        fired = 0
        wait = self.tick_resolution
        for row in rows:
            if self._stopping:
                break
            name: str = row["name"]
            now: dt.datetime = row["now"]
            due: dt.datetime = row["next_run_at"]
            if due > now:
                wait = min(wait, (due - now).total_seconds())
                break  # rows come in next_run_at order
            cron = self._stored_cron(name, row["expression"])
            if cron is None:
                continue
            try:
                if await self._fire(name, cron, due, now):
                    fired += 1
            except Exception:
                # One schedule's trouble (e.g. options the store rejects) must not hold up
                # the others; the tick stays due and is tried again after `tick_resolution`.
                log.exception("cron %s: could not enqueue the tick due at %s", name, due)
                continue
            wait = 0.0  # look again at once: the table has moved on
        return fired, wait

    def _stored_cron(self, name: str, expression: str) -> CronExpression | None:
        """The row's expression (another version may have written it), or None if unreadable."""
        try:
            return parse_cron(expression)
        except ValueError:
            if (name, expression) not in self._bad_rows:
                self._bad_rows.add((name, expression))
                log.exception("cron %s: cannot read the stored expression; skipping it", name)
            return None

    async def _fire(
        self, name: str, cron: CronExpression, due: dt.datetime, now: dt.datetime
    ) -> bool:
        """Move the schedule past `now` and enqueue its tick, unless another scheduler did."""
        following = cron.next_after(now)
        tick = max(cron.latest_at_or_before(now), due)  # `due` off the grid: edited by hand
        late = now - tick
        skip = self.catch_up_window is not None and late > self.catch_up_window
        definition = self.definitions[name]
        async with self._pool().acquire() as conn, conn.transaction():
            status = await conn.execute(_ADVANCE, name, due, cron.expression, following)
            if status != "UPDATE 1":  # another scheduler took this tick (or re-registered it)
                log.debug("cron %s: the tick due at %s was taken elsewhere", name, due.isoformat())
                return False
            if skip:
                log.warning(
                    "cron %s: skipped tick %s, %s late (catch_up_window %s); next run at %s",
                    name,
                    tick.isoformat(),
                    late,
                    self.catch_up_window,
                    following.isoformat(),
                )
                return False
            options = dataclasses.replace(definition.options, run_at=tick, delay=None)
            params = dict(definition.cron_params)
            task_id = await self._store.enqueue(name, params, options, tx=conn)
            await conn.execute(_RECORD_RUN, name, tick, task_id)
        if tick > due:
            log.warning(
                "cron %s: missed the ticks from %s to %s; ran one catch-up (task %d) for %s;"
                " next run at %s",
                name,
                due.isoformat(),
                tick.isoformat(),
                task_id,
                tick.isoformat(),
                following.isoformat(),
            )
        else:
            log.debug("cron %s: enqueued task %d for %s", name, task_id, tick.isoformat())
        return True

    async def _loop(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                _, wait = await self._run_due()
                backoff = 0.1
            except Exception:  # the database is away, most likely; the schedule must survive it
                log.exception("cron scheduler %s: reading the schedules failed; retrying", self.id)
                wait, backoff = backoff, min(backoff * 2, _MAX_BACKOFF)
            if wait > 0 and not self._stopping:
                await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or until `stop()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
