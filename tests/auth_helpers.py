"""Shared pieces of the auth tests: a settable clock and a migrated database with the services."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import asyncpg

SECRET = "k9T2vQ8xLm4Rz7Wp1Ys6Nb3Hc5Jd0Fg-test-secret"
PASSWORD = "correct horse battery"
START = 1_800_000_000.0  # 2027-01-15, a round epoch for readable expiries


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingPool:
    """An asyncpg pool that counts the queries run directly on it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queries = 0

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchval(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.execute(*args, **kwargs)

    def acquire(self) -> Any:
        self.queries += 1
        return self.pool.acquire()


def modules(template_package: str) -> tuple[ModuleType, ModuleType]:
    """(anchor.auth, anchor.settings) of the template."""
    auth = importlib.import_module(f"{template_package}.anchor.auth")
    settings = importlib.import_module(f"{template_package}.anchor.settings")
    return auth, settings


def make_settings(template_package: str, **fields: Any) -> Any:
    """Settings from `fields` only (no .env file); production-like with a strong secret."""
    _, settings = modules(template_package)
    fields.setdefault("database_url", "postgresql://localhost/unused")
    fields.setdefault("auth_secret", SECRET)
    return settings.Settings(_env_file=None, **fields)


@dataclass
class AuthEnv:
    auth: ModuleType
    pool: asyncpg.Pool
    clock: FakeClock
    settings: Any
    authenticator: Any
    accounts: Any

    def header(self, token: str) -> str:
        return f"Bearer {token}"

    def other_process(self, **settings_fields: Any) -> Any:
        """A second Authenticator on the same database and secret, as in another replica."""
        settings = self.settings.model_copy(update=settings_fields)
        return self.auth.Authenticator(self.pool, settings, clock=self.clock)


@contextlib.asynccontextmanager
async def auth_env(
    template_package: str,
    url: str,
    *,
    hooks: Any = None,
    hasher: Any = None,
    **settings_fields: Any,
) -> AsyncIterator[AuthEnv]:
    """Migrated auth tables, and an Authenticator + Accounts on them with a fake clock."""
    auth, _ = modules(template_package)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=8)
    try:
        async with pool.acquire() as conn:
            await auth.migrate(conn)
        clock = FakeClock()
        settings = make_settings(template_package, **settings_fields)
        authenticator = auth.Authenticator(pool, settings, clock=clock)
        accounts = auth.Accounts(
            pool,
            authenticator,
            hooks=hooks,
            passwords=auth.Passwords(hasher or auth.cheap_hasher()),
        )
        yield AuthEnv(auth, pool, clock, settings, authenticator, accounts)
    finally:
        await pool.close()
