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
                    conn = await self._pool.acquire()
                    try:
                        tx = conn.transaction()
                        await tx.start()
                    except BaseException:
                        await self._pool.release(conn)
                        raise
                    self._conn, self._tx = conn, tx
        return self._conn

    async def commit(self) -> None:
        if self._tx is not None:
            try:
                await self._tx.commit()
            finally:
                await self._close()

    async def rollback(self) -> None:
        """Roll back and release; a connection broken mid-query is closed instead of reused."""
        if self._tx is None or self._conn is None:
            return
        try:
            if not self._conn.is_closed():
                await self._tx.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            self._conn.terminate()
        finally:
            await self._close()

    async def _close(self) -> None:
        conn, self._conn, self._tx = self._conn, None, None
        if conn is not None:
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
