"""Session keys: one database row per sign-in session, and a bounded in-process cache of them.

A row holds a random salt, never a usable key: the token root key is derived from it and the
server secret (`tokens.derive_root_key`). Revoking a session sets `revoked_at`; every token of
the session fails from then on.

The cache keeps what was read about a key for at most `revocation_delay` seconds, so a
revocation made by another process takes effect here within that bound. Revocations made
through this store update the cache at once. Only keys that exist are cached (a lookup of an
unknown id always asks the database), and the cache is an LRU of bounded size.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..tasks.connections import PoolSource, resolve_pool
from .tokens import Clock, derive_root_key, epoch

if TYPE_CHECKING:
    from ..db import Connection

SALT_BYTES = 32

_GET = """
SELECT user_id, salt, extract(epoch FROM expires_at)::float8 AS expires_at,
       revoked_at IS NOT NULL AS revoked
FROM anchor_auth_keys WHERE id = $1
"""
_CREATE = """
INSERT INTO anchor_auth_keys (user_id, salt, expires_at) VALUES ($1, $2, to_timestamp($3))
RETURNING id
"""
_REVOKE = """
UPDATE anchor_auth_keys SET revoked_at = now()
WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2) AND revoked_at IS NULL
RETURNING id
"""
_REVOKE_USER = (
    "UPDATE anchor_auth_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
)
_REVOKE_ALL = "UPDATE anchor_auth_keys SET revoked_at = now() WHERE revoked_at IS NULL"
_PRUNE = (
    "DELETE FROM anchor_auth_keys WHERE revoked_at IS NOT NULL OR expires_at <= to_timestamp($1)"
)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A sign-in session as the verifier needs it."""

    id: int
    user_id: int
    root_key: bytes = field(repr=False)
    expires_at: float  # epoch seconds
    revoked: bool = False

    def usable(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


class KeyStore:
    """Creates, reads (through the cache) and revokes session keys."""

    def __init__(
        self,
        db: PoolSource,
        secret: bytes,
        *,
        revocation_delay: float,
        clock: Clock,
        max_cached: int = 10_000,
    ) -> None:
        self._db = db
        self._secret = secret
        self._delay = revocation_delay
        self._clock = clock
        self._max = max_cached
        self._cache: OrderedDict[int, tuple[SessionKey, float]] = OrderedDict()
        # Bumped by every revocation, so a read that raced one is not cached (it may be stale).
        self._generation = 0

    async def get(self, key_id: int) -> SessionKey | None:
        """The key, from the cache if read less than `revocation_delay` seconds ago (revoked
        keys stay cached: revocation is final); None if there is no such key."""
        now = epoch(self._clock)
        cached = self._cache.get(key_id)
        if cached is not None:
            key, read_at = cached
            if key.revoked or read_at <= now < read_at + self._delay:
                self._cache.move_to_end(key_id)
                return key
        generation = self._generation
        row = await resolve_pool(self._db).fetchrow(_GET, key_id)
        if row is None:
            self._cache.pop(key_id, None)
            return None
        key = SessionKey(
            id=key_id,
            user_id=row["user_id"],
            root_key=derive_root_key(self._secret, key_id, bytes(row["salt"])),
            expires_at=row["expires_at"],
            revoked=row["revoked"],
        )
        if generation == self._generation:
            self._remember(key, now)
        return key

    async def create(self, conn: Connection, user_id: int, expires_at: float) -> SessionKey:
        """Insert a session key in the caller's transaction; `remember` it once committed."""
        salt = secrets.token_bytes(SALT_BYTES)
        key_id = await conn.fetchval(_CREATE, user_id, salt, expires_at)
        root_key = derive_root_key(self._secret, key_id, salt)
        return SessionKey(id=key_id, user_id=user_id, root_key=root_key, expires_at=expires_at)

    def remember(self, key: SessionKey) -> None:
        """Cache a key this process just created (saves the first request a query)."""
        self._remember(key, epoch(self._clock))

    async def revoke(
        self, key_id: int, *, user_id: int | None = None, conn: Connection | None = None
    ) -> bool:
        """Revoke one session (of `user_id`, if given). True if this call revoked it, False
        if it was already revoked or does not exist: concurrent callers see True once.

        Given `conn` (the caller's transaction), call `forget(key_id)` once it commits."""
        if conn is not None:
            return await conn.fetchval(_REVOKE, key_id, user_id) is not None
        revoked = await resolve_pool(self._db).fetchval(_REVOKE, key_id, user_id) is not None
        self.forget(key_id)
        return revoked

    def forget(self, key_id: int) -> None:
        """Mark a key revoked in the cache (after a revocation this process committed)."""
        self._generation += 1
        cached = self._cache.get(key_id)
        if cached is not None:
            self._cache[key_id] = (replace(cached[0], revoked=True), cached[1])

    async def revoke_user(self, user_id: int) -> int:
        """Revoke every session of a user; the number revoked."""
        status = await resolve_pool(self._db).execute(_REVOKE_USER, user_id)
        self._generation += 1
        for key_id in [k for k, (key, _) in self._cache.items() if key.user_id == user_id]:
            del self._cache[key_id]
        return _count(status)

    async def revoke_all(self) -> int:
        """Revoke every session of every user (sessions begun afterwards are unaffected)."""
        status = await resolve_pool(self._db).execute(_REVOKE_ALL)
        self._generation += 1
        self._cache.clear()
        return _count(status)

    async def prune(self) -> int:
        """Delete revoked and expired keys (their tokens fail either way); the number deleted."""
        return _count(await resolve_pool(self._db).execute(_PRUNE, epoch(self._clock)))

    def _remember(self, key: SessionKey, now: float) -> None:
        self._cache[key.id] = (key, now)
        self._cache.move_to_end(key.id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)


def _count(status: str) -> int:
    """Rows affected, from asyncpg's command status (`UPDATE 3`)."""
    return int(status.rsplit(" ", 1)[-1])
