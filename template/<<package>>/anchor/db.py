"""The database handle: one asyncpg pool per process, and transactions on it.

`Database` is created unconnected in the composition root (so handlers and generated
queries can hold it from the start) and connected in the server's lifespan. It forwards
the asyncpg query methods to the pool, so generated `Queries(db)` work on it directly,
and `async with db.transaction() as tx: Queries(tx)` runs the same queries in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

if TYPE_CHECKING:  # asyncpg's classes are generic only in its type stubs
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    ConnectionInit: TypeAlias = Callable[
        [asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]
    ]
else:
    Connection = asyncpg.Connection | PoolConnectionProxy
    ConnectionInit = Callable[..., Coroutine[Any, Any, None]]
log = logging.getLogger(__name__)

IsolationLevel = Literal["read_committed", "repeatable_read", "serializable"]


T = TypeVar("T")
# The server is starting, stopping or unreachable: worth waiting for at startup.
_UNAVAILABLE = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
)


async def retry_connect(connect: Callable[[], Awaitable[T]], *, timeout: float = 30.0) -> T:
    """Run `connect` until it succeeds, waiting up to `timeout` seconds for the database to come
    up (a restart, a container starting next to ours); then the last error is raised."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await connect()
        except _UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class DatabaseNotConnected(RuntimeError):
    """A query ran before the server's lifespan connected the pool (or after it closed it)."""


class Database:
    """An asyncpg pool that is created lazily and that generated queries can use directly.

    `init` runs on every new connection; the composition root passes the generated
    `register_codecs`, so json/jsonb are Python values in every query.
    """

    def __init__(
        self,
        url: str | None,
        *,
        min_size: int = 2,
        max_size: int = 10,
        init: ConnectionInit | None = None,
    ) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._init = init
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def connect(self, url: str | None = None) -> None:
        """Open the pool (idempotent). `url` overrides the one given at construction."""
        if self._pool is not None:
            return
        self.url = url or self.url
        if not self.url:
            raise DatabaseNotConnected(
                "no database URL: set DATABASE_URL or use the embedded server"
            )
        self._pool = await retry_connect(
            lambda: asyncpg.create_pool(
                self.url,
                min_size=min(self.min_size, self.max_size),
                max_size=self.max_size,
                init=self._init,
            )
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def pool_stats(self) -> tuple[int, int, int] | None:
        """(open connections, idle ones, maximum) of the pool; None when not connected.
        Cheap (no query): the /metrics pool gauges read it on every scrape."""
        pool = self._pool
        if pool is None:
            return None
        return pool.get_size(), pool.get_idle_size(), pool.get_max_size()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise DatabaseNotConnected("the database pool is not connected (is the app started?)")
        return self._pool

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, readonly: bool = False
    ) -> AsyncIterator[Connection]:
        """Borrow a connection and run a transaction on it: commit on exit, roll back on error."""
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation=isolation, readonly=readonly):
                yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Borrow a connection without a transaction (e.g. for LISTEN or session settings)."""
        async with self.pool.acquire() as conn:
            yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when a trivial query succeeds within `timeout` seconds."""
        try:
            value = await self.pool.fetchval("SELECT 1", timeout=timeout)
        except (OSError, asyncpg.PostgresError, DatabaseNotConnected, TimeoutError):
            return False
        return bool(value == 1)

    # The asyncpg query methods, forwarded to the pool: `Database` is a generated-code DBTX.

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return await self.pool.execute(query, *args, timeout=timeout)

    async def executemany(
        self, command: str, args: Iterable[Sequence[Any]], *, timeout: float | None = None
    ) -> None:
        await self.pool.executemany(command, args, timeout=timeout)

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[asyncpg.Record]:
        return await self.pool.fetch(query, *args, timeout=timeout)

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> asyncpg.Record | None:
        return await self.pool.fetchrow(query, *args, timeout=timeout)

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        return await self.pool.fetchval(query, *args, column=column, timeout=timeout)

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[Sequence[Any]],
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        timeout: float | None = None,
    ) -> str:
        return await self.pool.copy_records_to_table(
            table_name, records=records, columns=columns, schema_name=schema_name, timeout=timeout
        )
