"""Where the engine gets connections: a `Database` or a bare asyncpg pool, and the executor's
lazily begun transaction.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from ..db import Database

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    PoolConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    PoolConnection = Any

PoolSource: TypeAlias = "Database | Pool"


def resolve_pool(source: PoolSource) -> Pool:
    """The pool behind `source`, looked up on each use: a `Database` connects in the lifespan."""
    return source.pool if isinstance(source, Database) else source


# What a lost or restarting database raises. Background loops catch these, log them and
# carry on, so a PostgreSQL restart never ends a worker. (InternalClientError: asyncpg's
# protocol state after the server dropped the connection mid-operation.)
DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Bounded waits, so a database outage fails the attempt (to be retried) instead of hanging it.
ACQUIRE_TIMEOUT = 10.0
RELEASE_TIMEOUT = 5.0


class LazyTransaction:
    """The executor's `Transaction`: a pool connection and a transaction, begun on first query.

    The worker commits it together with the fenced row update that completes the task, or
    rolls it back when the task fails, times out, is cancelled or lost its lease.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: PoolConnection | None = None
        self._tx: asyncpg.transaction.Transaction | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._conn is not None

    async def connection(self) -> PoolConnection:
        """The connection with the transaction open (begins it if needed)."""
        if self._conn is None:
            async with self._lock:
                if self._conn is None:
                    conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT)
                    try:
                        tx = conn.transaction()
                        await tx.start()
                    except BaseException:
                        await self._discard(conn)
                        raise
                    self._conn, self._tx = conn, tx
        return self._conn

    async def commit(self) -> None:
        if self._tx is None or self._conn is None:
            return
        try:
            await self._tx.commit()
        except BaseException:
            await self._discard(self._conn)
            self._conn = self._tx = None
            raise
        await self._close()

    async def rollback(self) -> None:
        """Roll back and release; a connection that fails to roll back is closed, not reused."""
        if self._tx is None or self._conn is None:
            return
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        try:
            if not conn.is_closed():
                await tx.rollback()
        except Exception:  # the server went away: nothing is left to roll back
            await self._discard(conn)
            return
        except BaseException:
            await self._discard(conn)
            raise
        await self._pool.release(conn, timeout=RELEASE_TIMEOUT)

    async def _close(self) -> None:
        conn, self._conn, self._tx = self._conn, None, None
        if conn is not None:
            await self._pool.release(conn, timeout=RELEASE_TIMEOUT)

    async def _discard(self, conn: PoolConnection) -> None:
        """Close a connection in an unknown state (e.g. the server went away mid-query) and
        give it back: the pool opens a fresh one in its place instead of reusing it."""
        conn.terminate()
        await self._pool.release(conn)

    # The `Transaction` protocol: asyncpg's query methods on the lazily opened connection.

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return await (await self.connection()).execute(query, *args, timeout=timeout)

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        await (await self.connection()).executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        return await (await self.connection()).fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await (await self.connection()).fetchrow(query, *args, timeout=timeout)

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        conn = await self.connection()
        return await conn.fetchval(query, *args, column=column, timeout=timeout)

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        return await (await self.connection()).copy_records_to_table(table_name, **kwargs)
