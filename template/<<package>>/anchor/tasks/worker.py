"""The worker: claims batches of due tasks, runs their executors, and settles each attempt.

One loop claims up to `batch_size` tasks in one statement whenever slots are free, and
sleeps until a NOTIFY on its queues, a finished task or `poll_interval`. Side loops
heartbeat the leases of everything in flight (one UPDATE), rescue tasks whose lease expired
(any worker does it; SKIP LOCKED keeps them from colliding), flush batched completions,
and keep the LISTEN connection alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .. import logs
from . import leases
from .completer import Completer
from .connections import DB_ERRORS, LazyTransaction, Pool, PoolSource, resolve_pool
from .contract import FailedTask, RetryPolicy, TaskDefinition, TaskFailedHook
from .durations import format_duration, retry_delay
from .models import policy_from_json
from .store import CANCEL_CHANNEL, queue_channel

if TYPE_CHECKING:
    from .metrics import TaskMetrics

log = logging.getLogger(__name__)

StopReason = Literal["stop", "cancelled", "lost"]


@dataclass
class RunContext:
    """The `TaskContext` an executor receives."""

    task_id: int
    attempt: int
    name: str


@dataclass(eq=False)
class _Run:
    """One claimed attempt, from claim until its outcome is written (or handed over)."""

    task_id: int
    attempt: int
    name: str
    params: dict[str, Any]
    max_attempts: int
    policy: RetryPolicy
    timeout: float | None
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    settling: bool = False  # executor done, outcome being written: never cancel now
    released: bool = field(default=False)


class Worker:
    """Runs tasks of `definitions` from `queues` with up to `concurrency` executors at once.

    A task with labels runs only on a worker whose `labels` include all of them (e.g. `gpu`).

    The pool should have room for `concurrency` executor transactions plus about three
    connections of the worker's own (LISTEN, claim/heartbeat, completion flushes).
    """

    def __init__(
        self,
        db: PoolSource,
        definitions: Mapping[str, TaskDefinition],
        *,
        queues: Sequence[str] = ("default",),
        labels: Sequence[str] = (),
        concurrency: int = 10,
        batch_size: int | None = None,
        lease: dt.timedelta = dt.timedelta(seconds=30),
        poll_interval: float = 1.0,
        heartbeat_interval: float | None = None,
        rescue_interval: float | None = None,
        completion_interval: float = 0.005,
        listen: bool = True,
        worker_id: str | None = None,
        metrics: TaskMetrics | None = None,
        on_task_failed: Sequence[TaskFailedHook] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not definitions:
            raise ValueError("a worker needs at least one task definition")
        self._db = db
        self.definitions = dict(definitions)
        self.queues = list(queues)
        self.labels = sorted(set(labels))  # a labelled task runs only where all its labels are
        self.concurrency = concurrency
        self.batch_size = max(1, min(batch_size or concurrency, concurrency))
        self.lease = lease
        self.poll_interval = poll_interval
        lease_s = lease.total_seconds()
        self.heartbeat_interval = heartbeat_interval or lease_s / 3
        self.rescue_interval = rescue_interval or max(lease_s / 2, 0.05)
        self.listen = listen
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[int, _Run] = {}
        self._to_release: list[_Run] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._claim_task: asyncio.Task[None] | None = None
        self._side_tasks: list[asyncio.Task[None]] = []
        self._metrics = metrics  # metrics: None records nothing
        self.on_task_failed = list(on_task_failed)  # for every task, after its own on_failed
        self._completer = Completer(
            self._pool, self.id, interval=completion_interval, batch_size=max(self.batch_size, 50)
        )

    def _pool(self) -> Pool:
        return resolve_pool(self._db)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # Lifecycle

    async def start(self) -> None:
        """Start the loops in the background; returns at once."""
        if self._claim_task is not None:
            raise RuntimeError("worker already started")
        spawn = asyncio.create_task
        self._claim_task = spawn(self._claim_loop(), name=f"anchor-worker-claim-{self.id}")
        self._side_tasks = [
            spawn(self._every(self.heartbeat_interval, self._heartbeat)),
            spawn(self._every(self.rescue_interval, self.rescue)),
            spawn(self._completer.run()),
        ]
        if self.listen:
            self._side_tasks.append(spawn(self._listen_loop()))
        # metrics: the database-derived gauges (queue depth, oldest due task)
        if self._metrics is not None and self._metrics.queue_stats_interval:
            interval = self._metrics.queue_stats_interval
            self._side_tasks.append(spawn(self._every(interval, self._refresh_queue_stats)))

    async def run(self) -> None:
        """Start and return when `stop()` has finished."""
        await self.start()
        await self._stopped.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; give running tasks `grace` seconds, then cancel them and hand them
        back to pending at once (that attempt is not counted); flush completions.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._wake.set()
        if self._claim_task is not None:
            await asyncio.gather(self._claim_task, return_exceptions=True)
        tasks = [run.task for run in self._running.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for run in list(self._running.values()):
            if run.task is not None and not run.settling:
                run.stop_reason = "stop"
                run.task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._release()
            await self._completer.flush()
        except DB_ERRORS:
            log.exception("worker %s: could not hand back tasks; their leases will expire", self.id)
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        self._stopped.set()

    # Claiming

    async def _claim_loop(self) -> None:
        threshold = max(1, self.batch_size // 2)
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._running)
            if 0 < free < threshold:
                # Let a few more slots free up so the next claim fetches a useful batch.
                await self._sleep(0.005)
                free = self.concurrency - len(self._running)
            if free > 0 and not self._stopping:
                want = min(self.batch_size, free)
                try:
                    claimed = await self._claim(want)
                except DB_ERRORS as exc:  # the database is away: say so briefly, poll again
                    log.warning("worker %s: claim failed: %r", self.id, exc)
                    claimed = []
                except Exception:  # never let the claim loop die
                    log.exception("worker %s: claim failed", self.id)
                    claimed = []
                if len(claimed) == want:
                    continue  # probably more due; go again at once
            await self._sleep(self.poll_interval)

    async def _claim(self, limit: int) -> list[_Run]:
        rows = await self._pool().fetch(
            leases.CLAIM,
            self.queues,
            list(self.definitions),
            limit,
            self.id,
            self.lease,
            self.labels,
        )
        runs = [
            _Run(
                task_id=row["id"],
                attempt=row["attempts"],
                name=row["name"],
                params=json.loads(row["params"]),
                max_attempts=row["max_attempts"],
                policy=policy_from_json(row["retry_policy"], row["max_attempts"]),
                timeout=row["timeout"],
            )
            for row in rows
        ]
        for run in runs:
            self._running[run.task_id] = run
            run.task = asyncio.create_task(self._execute(run), name=f"anchor-task-{run.task_id}")
            run.task.add_done_callback(functools.partial(self._forget, run))
        return runs

    def _forget(self, run: _Run, _task: object = None) -> None:
        if self._running.get(run.task_id) is run:
            del self._running[run.task_id]
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (NOTIFY, a finished task, stop) or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # Running one attempt

    async def _execute(self, run: _Run) -> None:
        # logging: this attempt's own asyncio task, so the fields end with it
        logs.set_context(task_id=run.task_id, task=run.name, attempt=run.attempt)
        definition = self.definitions[run.name]
        tx = LazyTransaction(self._pool())
        scope = asyncio.timeout(run.timeout)
        metrics, started = self._metrics, 0.0  # metrics
        if metrics is not None:
            metrics.run_started()
            started = time.perf_counter()
        try:
            try:
                async with scope:
                    result = await definition.execute(
                        RunContext(run.task_id, run.attempt, run.name), tx, run.params
                    )
                result_json = None if result is None else json.dumps(result)
            except asyncio.CancelledError:
                await tx.rollback()
                if run.stop_reason == "stop":
                    self._to_release.append(run)
                elif run.stop_reason is None:
                    raise  # not ours (e.g. the event loop is closing)
                return
            except Exception as exc:
                run.settling = True
                if metrics is not None:
                    metrics.record_run_time(run.name, time.perf_counter() - started)
                await tx.rollback()
                if scope.expired():
                    assert run.timeout is not None
                    timeout = format_duration(dt.timedelta(seconds=run.timeout))
                    await self._fail(run, "timeout", f"timed out after {timeout}")
                else:
                    await self._fail(run, "error", f"{type(exc).__name__}: {exc}")
                return
            run.settling = True
            if metrics is not None:
                metrics.record_run_time(run.name, time.perf_counter() - started)
            if tx.started:
                await self._complete_in(tx, run, result_json)
            else:
                self._completer.add(run.task_id, run.attempt, result_json)
                if metrics is not None:  # counted when buffered: the flush is fenced in bulk
                    metrics.record_completed(run.name)
        except DB_ERRORS:
            # The outcome could not be written: the lease will expire and a rescuer retries.
            log.exception("worker %s: settling task %s failed", self.id, run.task_id)
            await tx.rollback()
        finally:
            if metrics is not None:
                metrics.run_ended()

    async def _complete_in(self, tx: LazyTransaction, run: _Run, result_json: str | None) -> None:
        """Mark the task completed inside the executor's transaction, then commit both."""
        conn = await tx.connection()
        status = await conn.execute(
            leases.COMPLETE_ONE, run.task_id, self.id, run.attempt, result_json
        )
        if status == "UPDATE 1":
            await tx.commit()
            if self._metrics is not None:
                self._metrics.record_completed(run.name)
        else:
            log.warning("task %s: lease lost before completion; rolled back", run.task_id)
            await tx.rollback()

    async def _fail(self, run: _Run, kind: str, message: str) -> None:
        """Record the failed attempt; retry later or fail for good (then run `on_failed`
        in the same transaction, so its writes commit only together with the failure).
        """
        retry = run.max_attempts == -1 or run.attempt < run.max_attempts
        delay = retry_delay(run.policy, run.attempt) if retry else dt.timedelta()
        state = "pending" if retry else "failed"
        async with self._pool().acquire() as conn, conn.transaction():
            status = await conn.execute(
                leases.FAIL, run.task_id, self.id, run.attempt, state, delay, message
            )
            if status != "UPDATE 1":
                log.warning("task %s: lease lost before recording failure", run.task_id)
                return
            await conn.execute(
                leases.RECORD_ATTEMPT, run.task_id, run.attempt, kind, message, self.id
            )
            if state == "failed":
                await self._failed_for_good(conn, run.task_id, run.name, run.params, message)
        if self._metrics is not None:  # metrics: the failure is committed
            if retry:
                self._metrics.record_retried(run.name)
            else:
                self._metrics.record_failed(run.name)

    async def _failed_for_good(
        self, conn: Any, task_id: int, name: str, params: Mapping[str, Any], error: str
    ) -> None:
        """Run the task's `on_failed`, then every `on_task_failed` hook, in the failing tx."""
        definition = self.definitions.get(name)
        if definition is not None and definition.on_failed is not None:
            on_failed = functools.partial(definition.on_failed, conn, task_id, params)
            await self._run_hook(conn, task_id, on_failed)
        failed = FailedTask(id=task_id, name=name, params=params, error=error)
        for hook in self.on_task_failed:
            await self._run_hook(conn, task_id, functools.partial(hook, conn, failed))

    async def _run_hook(self, conn: Any, task_id: int, hook: Callable[[], Awaitable[None]]) -> None:
        """A failure hook in a savepoint: a failing hook is logged and noted on the task, and
        does not undo the failure it reacts to (Anclax retried forever in that case).
        """
        try:
            async with conn.transaction():
                await hook()
        except Exception as exc:
            log.exception("task %s: a failure hook raised", task_id)
            await conn.execute(
                leases.APPEND_ERROR, task_id, f"; on_failed raised {type(exc).__name__}: {exc}"
            )

    # Leases

    async def _heartbeat(self) -> None:
        """Extend every lease we hold in one UPDATE; stop executors whose task we lost
        (cancelled, or rescued after a stall).
        """
        owned = [(r.task_id, r.attempt) for r in self._running.values()]
        owned += self._completer.owned()
        if not owned:
            return
        rows = await self._pool().fetch(
            leases.HEARTBEAT,
            [o[0] for o in owned],
            [o[1] for o in owned],
            self.lease,
            self.id,
        )
        alive = {row["id"] for row in rows}
        for task_id, attempt in owned:
            run = self._running.get(task_id)
            if task_id not in alive and run is not None and run.attempt == attempt:
                self._interrupt(run, "lost")

    def _interrupt(self, run: _Run, reason: StopReason) -> None:
        if run.task is not None and not run.settling and run.stop_reason is None:
            log.info("task %s: stopping its executor (%s)", run.task_id, reason)
            run.stop_reason = reason
            run.task.cancel()

    async def _release(self) -> None:
        runs, self._to_release = self._to_release, []
        if runs:
            await self._pool().execute(
                leases.RELEASE, [r.task_id for r in runs], [r.attempt for r in runs], self.id
            )

    async def rescue(self, limit: int = 1000) -> int:
        """Move tasks with expired leases back to pending (or to failed, running `on_failed`
        when this worker knows the task). Returns how many were rescued.
        """
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(leases.RESCUE, limit)
            for row in rows:
                if row["state"] == "failed":
                    params = json.loads(row["params"])
                    await self._failed_for_good(
                        conn, row["id"], row["name"], params, "lease expired"
                    )
            for queue in {row["queue"] for row in rows if row["state"] == "pending"}:
                await conn.execute("SELECT pg_notify($1, '')", queue_channel(queue))
        if rows:
            log.warning("rescued %d task(s) with expired leases", len(rows))
        if self._metrics is not None:  # metrics: an expired lease is a failed attempt
            for row in rows:
                if row["state"] == "pending":
                    self._metrics.record_retried(row["name"])
                else:
                    self._metrics.record_failed(row["name"])
        return len(rows)

    async def _refresh_queue_stats(self) -> None:  # metrics
        metrics = self._metrics
        if metrics is not None and metrics.queue_stats_interval:
            await metrics.refresh_queue_stats(
                self._pool(), queues=self.queues, max_age=metrics.queue_stats_interval / 2
            )

    async def _every(self, seconds: float, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except DB_ERRORS as exc:
                log.warning("worker %s: %s failed: %r", self.id, job.__name__, exc)
            except Exception:  # a background duty must outlive any one failure
                log.exception("worker %s: %s failed", self.id, job.__name__)

    # LISTEN/NOTIFY

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        if channel == CANCEL_CHANNEL:
            run = self._running.get(int(str(payload)))
            if run is not None:
                self._interrupt(run, "cancelled")
        else:
            self._wake.set()

    async def _listen_loop(self) -> None:
        """Hold a LISTEN connection; on loss, reconnect with backoff and claim at once
        (notifications sent while disconnected are gone).
        """
        channels = [CANCEL_CHANNEL, *(queue_channel(q) for q in self.queues)]
        backoff = 0.1
        while True:
            try:
                async with self._pool().acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(functools.partial(_set_event, lost))
                    for channel in channels:
                        await conn.add_listener(channel, self._on_notify)
                    backoff = 0.1
                    self._wake.set()
                    try:
                        while not lost.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(lost.wait(), self.heartbeat_interval)
                            if not lost.is_set():
                                await conn.execute("SELECT 1", timeout=5)
                    finally:
                        if not conn.is_closed():
                            with contextlib.suppress(*DB_ERRORS):
                                for channel in channels:
                                    await conn.remove_listener(channel, self._on_notify)
            except DB_ERRORS:
                log.warning("worker %s: LISTEN connection lost; reconnecting", self.id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def _set_event(event: asyncio.Event, _conn: object) -> None:
    event.set()
