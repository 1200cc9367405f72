"""Cron scheduling (anchor.tasks.cron, anchor.tasks.scheduler) against real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from .task_helpers import Executor, setup_pool

UTC = dt.UTC
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def cron(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.cron")


@pytest.fixture
def scheduler(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.scheduler")


async def nothing(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
    return None


def cron_task(
    tasks: ModuleType,
    name: str,
    expression: str | None,
    execute: Executor = nothing,
    **options: Any,
) -> Any:
    attempts = options.pop("max_attempts", 1)
    intervals = options.pop("intervals", ())
    policy = tasks.RetryPolicy(intervals=intervals, max_attempts=attempts)
    return tasks.TaskDefinition(
        name, tasks.TaskOptions(retry_policy=policy, **options), execute, cron=expression
    )


def new_scheduler(
    scheduler: ModuleType, tasks: ModuleType, pool: asyncpg.Pool, *defs: Any, **kwargs: Any
) -> Any:
    return scheduler.CronScheduler(pool, {d.name: d for d in defs}, tasks.TaskStore(pool), **kwargs)


@contextlib.asynccontextmanager
async def started(*services: Any) -> AsyncIterator[None]:
    await asyncio.gather(*(s.start() for s in services))
    try:
        yield
    finally:
        await asyncio.gather(*(s.stop() for s in services))


async def run_ats(pool: asyncpg.Pool, name: str) -> list[dt.datetime]:
    rows = await pool.fetch("SELECT run_at FROM anchor_tasks WHERE name = $1 ORDER BY run_at", name)
    return [r["run_at"] for r in rows]


async def schedule(pool: asyncpg.Pool, name: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM anchor_cron_schedules WHERE name = $1", name)
    assert row is not None
    return row


async def drain(pool: asyncpg.Pool, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while await pool.fetchval(
        "SELECT count(*) FROM anchor_tasks WHERE state IN ('pending', 'running')"
    ):
        assert time.monotonic() < deadline, "tasks still pending or running"
        await asyncio.sleep(0.05)


def assert_every_second(times: Sequence[dt.datetime]) -> None:
    assert len(set(times)) == len(times), f"a tick was enqueued twice: {times}"
    assert all(t.microsecond == 0 for t in times)
    assert [b - a for a, b in itertools.pairwise(times)] == [SECOND] * (len(times) - 1)


# Expressions


def test_five_and_six_field_expressions(cron: ModuleType) -> None:
    after = dt.datetime(2026, 3, 2, 8, 59, 50, tzinfo=UTC)  # a Monday
    at = day_at(2026, 3, 2)
    assert cron.next_fire_times("*/15 * * * *", after, 3) == [at(9), at(9, 15), at(9, 30)]
    # Six fields put SECONDS FIRST (robfig/Anclax), not last as croniter does by default.
    assert cron.next_fire_times("*/20 * * * * *", after, 3) == [
        at(9), at(9, 0, 20), at(9, 0, 40),
    ]  # fmt: skip
    assert cron.next_fire_times("30 0 9 * * MON", after, 2) == [
        at(9, 0, 30), dt.datetime(2026, 3, 9, 9, 0, 30, tzinfo=UTC),
    ]  # fmt: skip
    assert cron.next_fire_times("0 0 9 * * *", after, 4) == cron.next_fire_times(
        "0 9 * * *", after, 4
    )
    # Times are UTC: a naive `after` is UTC, an aware one is converted.
    assert cron.next_fire_times("0 9 * * *", after.replace(tzinfo=None), 1) == [at(9)]
    plus_two = dt.timezone(dt.timedelta(hours=2))
    (first,) = cron.next_fire_times("0 9 * * *", after.astimezone(plus_two), 1)
    assert first == at(9) and first.utcoffset() == dt.timedelta()
    assert cron.next_fire_times("* * * * *", after, 0) == []
    # Strictly after; the latest tick at or before a moment includes the moment itself.
    expr = cron.parse_cron("  */20   * * * * * ")
    assert expr.expression == "*/20 * * * * *" and expr.has_seconds
    assert expr.next_after(at(9)) == at(9, 0, 20)
    assert expr.latest_at_or_before(at(9)) == at(9)
    assert expr.latest_at_or_before(at(9, 0, 19)) == at(9)


def day_at(year: int, month: int, day: int) -> Callable[..., dt.datetime]:
    def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)

    return at


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3 field"),
        ("* * * * * * *", "has 7 field"),
        ("", "has 0 field"),
        ("@daily", "descriptors"),
        ("61 * * * *", "invalid cron expression '61 \\* \\* \\* \\*'"),
        ("0 0 31 2 *", "invalid cron expression"),  # never fires
        ("x * * * *", "invalid cron expression"),
        ("*/5 * 25 * * *", "invalid cron expression"),  # hour 25
    ],
)
def test_bad_expressions_raise_value_error(
    cron: ModuleType, tasks: ModuleType, scheduler: ModuleType, expression: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cron.next_fire_times(expression, dt.datetime(2026, 1, 1, tzinfo=UTC), 1)
    with pytest.raises(ValueError, match="task 'Bad'"):
        scheduler.CronScheduler(None, {"Bad": cron_task(tasks, "Bad", expression)}, None)


# Firing


def test_three_schedulers_enqueue_each_tick_once_and_workers_run_them(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    """Every-second schedules, three schedulers and three workers on separate pools: each tick
    is enqueued once and run once; failing and slow runs do not stop or delay the schedule.
    """

    async def tick(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        assert params == {}
        await tx.execute("INSERT INTO executions (task_id, note) VALUES ($1, 'tick')", ctx.task_id)

    async def boom(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        raise RuntimeError("always fails")

    async def slow(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        await asyncio.sleep(1.5)

    defs = (
        cron_task(tasks, "Tick", "* * * * * *", tick),
        cron_task(tasks, "Boom", "* * * * * *", boom, max_attempts=2, intervals=(dt.timedelta(),)),
        cron_task(tasks, "Slow", "* * * * * *", slow, priority=5),
    )

    async def run() -> None:
        pools = [await setup_pool(database_url, tasks) for _ in range(3)]
        pool = pools[0]
        schedulers = [new_scheduler(scheduler, tasks, p, *defs) for p in pools]
        workers = [
            tasks.Worker(p, {d.name: d for d in defs}, poll_interval=0.05, lease=5 * SECOND)
            for p in pools
        ]
        async with started(*workers):
            async with started(*schedulers):
                await asyncio.sleep(3.3)
            await drain(pool)
        for name in ("Tick", "Slow"):
            times = await run_ats(pool, name)
            assert len(times) >= 3, (name, times)
            assert_every_second(times)
            row = await schedule(pool, name)
            assert row["enabled"] and row["next_run_at"] > times[-1]
            assert row["last_run_at"] == times[-1]
            last_task_run_at = await pool.fetchval(
                "SELECT run_at FROM anchor_tasks WHERE id = $1", row["last_task_id"]
            )
            assert last_task_run_at == times[-1]
        ticks = await run_ats(pool, "Tick")
        # Each tick ran exactly once.
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM anchor_tasks WHERE name = 'Tick' AND state <> 'completed'"
            )
            == 0
        )
        per_task = await pool.fetch(
            "SELECT t.id, count(e.task_id) AS n FROM anchor_tasks t"
            " LEFT JOIN executions e ON e.task_id = t.id WHERE t.name = 'Tick' GROUP BY t.id"
        )
        assert per_task and all(r["n"] == 1 for r in per_task)
        # A run that fails for good (retries exhausted) does not end the schedule. (A retry
        # moves run_at on, so Boom's ticks are checked on the schedule row.)
        boom_rows = await pool.fetch("SELECT state, attempts FROM anchor_tasks WHERE name = 'Boom'")
        assert len(boom_rows) >= len(ticks) - 1 >= 2
        assert all((r["state"], r["attempts"]) == ("failed", 2) for r in boom_rows)
        boom = await schedule(pool, "Boom")
        assert boom["enabled"] and abs(boom["last_run_at"] - ticks[-1]) <= SECOND
        # Slow runs (1.5 s, one a second) overlap: each tick is a task of its own.
        assert (
            await pool.fetchval(
                """SELECT count(*) FROM anchor_tasks a JOIN anchor_tasks b
               ON a.name = 'Slow' AND b.name = 'Slow' AND a.id <> b.id
               AND b.started_at > a.started_at AND b.started_at < a.finished_at"""
            )
            > 0
        )
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM anchor_tasks WHERE name = 'Slow' AND (state, priority)"
                " <> ('completed', 5)"
            )
            == 0
        )  # the definition's options go with every tick
        for p in pools:
            await p.close()

    asyncio.run(run())


def test_concurrent_run_due_enqueues_a_missed_tick_once(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    """After downtime, one catch-up (for the latest missed tick) however many schedulers race,
    then the schedule goes on from the first tick after now.
    """
    minutely = cron_task(tasks, "Minutely", "* * * * *", queue="cron")

    async def run() -> None:
        pools = [await setup_pool(database_url, tasks, max_size=3) for _ in range(5)]
        pool = pools[0]
        schedulers = [new_scheduler(scheduler, tasks, p, minutely) for p in pools]
        await schedulers[0].register()
        await pool.execute(
            "UPDATE anchor_cron_schedules SET next_run_at = date_trunc('minute', now())"
            " - interval '1 hour'"
        )
        fired = await asyncio.gather(*(s.run_due() for s in schedulers))
        assert sum(fired) == 1
        (run_at,) = await run_ats(pool, "Minutely")
        row = await schedule(pool, "Minutely")
        now = await pool.fetchval("SELECT clock_timestamp()")
        assert run_at <= now < row["next_run_at"]
        assert row["next_run_at"] - run_at == dt.timedelta(minutes=1)  # the latest missed tick
        assert (row["last_run_at"], row["enabled"]) == (run_at, True)
        task = await tasks.TaskStore(pool).get(row["last_task_id"])
        assert (task.name, task.queue, task.params, task.run_at) == ("Minutely", "cron", {}, run_at)
        assert sum(await asyncio.gather(*(s.run_due() for s in schedulers))) == 0
        for p in pools:
            await p.close()

    asyncio.run(run())


def test_catch_up_window_skips_a_tick_too_late(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    yearly = cron_task(tasks, "Yearly", "0 0 1 1 *")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        windowed = new_scheduler(scheduler, tasks, pool, yearly, catch_up_window=dt.timedelta(1))
        plain = new_scheduler(scheduler, tasks, pool, yearly)
        await plain.register()
        missed = "UPDATE anchor_cron_schedules SET next_run_at = '2001-01-01 00:00Z'"
        await pool.execute(missed)
        # Unless it is Jan 1st, this year's tick is more than a day late: skipped.
        now = await pool.fetchval("SELECT now()")
        this_year = dt.datetime(now.year, 1, 1, tzinfo=UTC)
        next_year = this_year.replace(year=now.year + 1)
        if now - this_year > dt.timedelta(days=1):
            assert await windowed.run_due() == 0
            assert await run_ats(pool, "Yearly") == []
            assert (await schedule(pool, "Yearly"))["next_run_at"] == next_year
            await pool.execute(missed)
        # Without a window, one catch-up stands for all the missed years.
        assert await plain.run_due() == 1
        assert await run_ats(pool, "Yearly") == [this_year]
        assert (await schedule(pool, "Yearly"))["next_run_at"] == next_year
        await pool.close()

    asyncio.run(run())


def test_restart_runs_one_catch_up_then_every_tick(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    every_second = cron_task(tasks, "Every", "* * * * * *")

    async def run() -> None:
        pools = [await setup_pool(database_url, tasks) for _ in range(2)]
        pool = pools[0]
        async with started(*(new_scheduler(scheduler, tasks, p, every_second) for p in pools)):
            await asyncio.sleep(1.6)
        before = await run_ats(pool, "Every")
        assert before
        assert_every_second(before)
        await asyncio.sleep(2.2)  # everything is down: at least two ticks go by
        restarted_at = await pool.fetchval("SELECT clock_timestamp()")
        async with started(new_scheduler(scheduler, tasks, pools[1], every_second)):
            await asyncio.sleep(1.6)
        after = (await run_ats(pool, "Every"))[len(before) :]
        assert len(after) >= 2
        catch_up, *regular = after
        # The missed ticks are not run one by one: one task for the latest of them...
        assert catch_up - before[-1] >= 2 * SECOND
        assert restarted_at - SECOND < catch_up <= restarted_at + SECOND / 2
        # ...then every tick again.
        assert_every_second(after)
        assert regular and regular[0] > restarted_at
        for p in pools:
            await p.close()

    asyncio.run(run())


# Registration


def test_registration_follows_the_definitions(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    async def run() -> None:
        pool = await setup_pool(database_url, tasks)

        async def register(*defs: Any, **kwargs: Any) -> Any:
            s = new_scheduler(scheduler, tasks, pool, *defs, **kwargs)
            await s.register()
            return s

        async def rows() -> dict[str, tuple[str, dt.datetime, bool]]:
            records = await pool.fetch("SELECT * FROM anchor_cron_schedules")
            return {r["name"]: (r["expression"], r["next_run_at"], r["enabled"]) for r in records}

        past = dt.datetime(2001, 1, 1, tzinfo=UTC)
        set_past = "UPDATE anchor_cron_schedules SET next_run_at = $2 WHERE name = $1"
        # Registered at startup: the first tick after now.
        await register(
            cron_task(tasks, "Job", "0 0 1 1 *"), cron_task(tasks, "Other", "*/10 * * * * *")
        )
        now = await pool.fetchval("SELECT clock_timestamp()")
        registered = await rows()
        assert registered["Job"] == ("0 0 1 1 *", dt.datetime(now.year + 1, 1, 1, tzinfo=UTC), True)
        assert (
            registered["Other"][1] - now <= 10 * SECOND and registered["Other"][1].second % 10 == 0
        )
        # The same expression (spacing aside): next_run_at kept, so missed ticks are caught up.
        await pool.execute(set_past, "Job", past)
        await register(
            cron_task(tasks, "Job", " 0  0 1 1 * "), cron_task(tasks, "Other", "*/10 * * * * *")
        )
        assert (await rows())["Job"] == ("0 0 1 1 *", past, True)
        # A changed expression starts afresh; a schedule whose task is gone is disabled.
        now = await pool.fetchval("SELECT clock_timestamp()")
        changed = await register(cron_task(tasks, "Job", "*/5 * * * * *"))
        current = await rows()
        assert current["Job"][0] == "*/5 * * * * *" and current["Job"][2]
        assert now < current["Job"][1] <= now + 6 * SECOND and current["Job"][1].second % 5 == 0
        assert current["Other"][2] is False
        # A task without a cron: its schedule is disabled and no longer fires.
        await register(cron_task(tasks, "Job", None), cron_task(tasks, "Other", "*/10 * * * * *"))
        current = await rows()
        assert current["Job"][2] is False and current["Other"][2] is True
        assert current["Other"][1] > now  # re-enabled: starts afresh
        await pool.execute(set_past, "Job", past)
        assert await changed.run_due() == 0
        # disable_unlisted=False leaves other services' schedules alone.
        await register(cron_task(tasks, "Job", "*/5 * * * * *"), disable_unlisted=False)
        current = await rows()
        assert current["Job"][2] is True and current["Job"][1] > now
        assert current["Other"][2] is True
        # Another process changed the expression under a running scheduler: the stored one wins.
        await pool.execute(set_past, "Other", past)
        stale = new_scheduler(scheduler, tasks, pool, cron_task(tasks, "Other", "0 0 1 1 *"))
        assert await stale.run_due() == 1
        assert (await schedule(pool, "Other"))["next_run_at"].second % 10 == 0
        await pool.close()

    asyncio.run(run())


def test_stop_wakes_the_scheduler_and_start_needs_the_table(
    tasks: ModuleType, scheduler: ModuleType, database_url: str
) -> None:
    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        s = new_scheduler(
            scheduler, tasks, pool, cron_task(tasks, "Yearly", "0 0 1 1 *"), tick_resolution=30
        )
        runner = asyncio.create_task(s.run())
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await s.stop()
        await asyncio.wait_for(runner, 1)
        assert time.monotonic() - began < 0.5
        with pytest.raises(ValueError, match="tick_resolution"):
            new_scheduler(scheduler, tasks, pool, tick_resolution=0)
        await pool.execute("DROP TABLE anchor_cron_schedules")
        with pytest.raises(asyncpg.UndefinedTableError):
            await new_scheduler(scheduler, tasks, pool, cron_task(tasks, "Y", "0 0 1 1 *")).start()
        await pool.close()

    asyncio.run(run())
