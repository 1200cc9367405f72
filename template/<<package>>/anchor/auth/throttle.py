"""Sign-in throttling per name (lower-cased, known or not), kept in the database so every API
replica shares it.

Each attempt is counted when it starts, in one statement, and a success deletes the count:
a burst of parallel guesses cannot slip past the limit. After `max_failures` attempts without
a success the name is locked: further attempts get 429 with Retry-After until the lock ends.
Each attempt after a lock ends locks again for twice as long (30 s, 60 s, ... capped at
`max_lockout`). The count starts over after `window` seconds without failures, measured from
the end of the last lock.
"""

from __future__ import annotations

import datetime as dt
import math

from fastapi import HTTPException

from ..tasks.connections import PoolSource, resolve_pool
from .tokens import Clock, epoch

MAX_FAILURES = 5
WINDOW = 15 * 60.0
BASE_LOCKOUT = 30.0
MAX_LOCKOUT = 15 * 60.0

# $1 name key, $2 now, $3 window, $4 max failures, $5 base lockout, $6 max lockout (seconds)
_NOW = "$2::timestamptz"
_QUIET = f"greatest(t.last_failure_at, t.locked_until) < {_NOW} - $3::float8 * interval '1 s'"
_FAILURES = f"(CASE WHEN {_QUIET} THEN 1 ELSE t.failures + 1 END)"


def _lock_after(failures: str) -> str:
    """The lock set once `failures` reach the maximum: base * 2^(excess), capped."""
    lockout = f"least($5::float8 * power(2, least({failures} - $4::int, 30)), $6::float8)"
    return f"CASE WHEN {failures} >= $4::int THEN {_NOW} + {lockout} * interval '1 s' END"


# Counts the attempt unless the name is locked. The outer SELECT reads the snapshot taken
# before the upsert, so when the upsert skipped a locked row it still reports the lock.
_ATTEMPT = f"""
WITH counted AS (
    INSERT INTO anchor_auth_throttle AS t
        (name_key, failures, window_start, last_failure_at, locked_until)
    VALUES ($1, 1, {_NOW}, {_NOW}, {_lock_after("1")})
    ON CONFLICT (name_key) DO UPDATE SET
        failures = {_FAILURES},
        window_start = CASE WHEN {_QUIET} THEN {_NOW} ELSE t.window_start END,
        last_failure_at = {_NOW},
        locked_until = {_lock_after(_FAILURES)}
    WHERE t.locked_until IS NULL OR t.locked_until <= {_NOW}
    RETURNING t.failures
)
SELECT (SELECT failures FROM counted) AS failures,
       (SELECT extract(epoch FROM locked_until)::float8 FROM anchor_auth_throttle
        WHERE name_key = $1) AS locked_until
"""
_SUCCEEDED = "DELETE FROM anchor_auth_throttle WHERE name_key = $1"
_PRUNE = """
DELETE FROM anchor_auth_throttle AS t
WHERE greatest(t.last_failure_at, t.locked_until) < $1::timestamptz - $2::float8 * interval '1 s'
"""


class Throttled(HTTPException):
    """429: too many failed sign-ins for this name; `Retry-After` says when to try again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            status_code=429,
            detail="too many failed sign-in attempts; try again later",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class Throttle:
    """The per-name sign-in limiter (see the module docstring)."""

    def __init__(
        self,
        db: PoolSource,
        *,
        clock: Clock,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        base_lockout: float = BASE_LOCKOUT,
        max_lockout: float = MAX_LOCKOUT,
    ) -> None:
        self._db = db
        self._clock = clock
        self._params = (float(window), max_failures, float(base_lockout), float(max_lockout))
        self._base_lockout = base_lockout

    async def attempt(self, name_key: str) -> None:
        """Count a sign-in attempt for `name_key`, or raise `Throttled` if it is locked."""
        now = epoch(self._clock)
        row = await resolve_pool(self._db).fetchrow(_ATTEMPT, name_key, _at(now), *self._params)
        if row is not None and row["failures"] is not None:
            return
        locked_until = row["locked_until"] if row is not None else None
        wait = locked_until - now if locked_until is not None else self._base_lockout
        raise Throttled(max(1, math.ceil(wait)))

    async def succeeded(self, name_key: str) -> None:
        """A successful sign-in: forget the name's failures."""
        await resolve_pool(self._db).execute(_SUCCEEDED, name_key)

    async def prune(self) -> int:
        """Delete the counts that no longer matter (quiet for `window`); the number deleted."""
        now = epoch(self._clock)
        status = await resolve_pool(self._db).execute(_PRUNE, _at(now), self._params[0])
        return int(status.rsplit(" ", 1)[-1])


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
