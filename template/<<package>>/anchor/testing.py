"""Test support: a fresh database per test run (TEST_DATABASE_URL's server, or embedded), and
fakes to swap into the composition root: a recording task runner and a fixed clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from . import pgembed
from .db import Connection
from .tasks import TaskOptions


@contextmanager
def fresh_database(*, embedded_dir: Path = Path(".anchor/pgdata")) -> Iterator[str]:
    """Create an empty database named `test_<random>`, yield its URL, drop it afterwards.

    The server is TEST_DATABASE_URL's if set (a URL to any database on it, with rights to
    create databases), else the embedded one in `embedded_dir`.
    """
    server_url = os.environ.get("TEST_DATABASE_URL") or pgembed.start(embedded_dir, "postgres")
    with temporary_database(server_url) as url:
        yield url


@contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """An empty database `test_<random>` on the server of `server_url`, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield pgembed.with_database(server_url, name)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Enqueued:
    """One call a `RecordingEnqueuer` received."""

    name: str
    params: Mapping[str, Any]
    options: TaskOptions
    in_transaction: bool


class RecordingEnqueuer:
    """A stand-in for the task store that records enqueued tasks instead of storing them.

    `TaskRunner(RecordingEnqueuer())` is a fake task runner: code under test enqueues as
    usual, and the test reads `.enqueued`. Task ids count up from 1.
    """

    def __init__(self) -> None:
        self.enqueued: list[Enqueued] = []

    async def enqueue(
        self,
        name: str,
        params: Mapping[str, Any],
        options: TaskOptions,
        *,
        tx: Connection | None = None,
    ) -> int:
        self.enqueued.append(Enqueued(name, dict(params), options, tx is not None))
        return len(self.enqueued)

    def names(self) -> list[str]:
        return [call.name for call in self.enqueued]


class FixedClock:
    """A clock that stands still until the test moves it: `clock.advance(seconds)`.

    Pass it where a `clock` is accepted (`build_services(settings, clock=...)`); calling it
    returns the current epoch seconds.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
