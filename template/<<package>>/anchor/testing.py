"""Test support: a fresh database per test run (TEST_DATABASE_URL's server, or embedded)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from . import pgembed


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
