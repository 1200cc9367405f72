"""Accounts: sign-up, sign-in, refresh, sign-out, organisations and revocation.

A sign-in opens a session (a row of `anchor_auth_keys`) and returns an access token and a
refresh token of that session. Refreshing rotates that session only: its key is revoked, a new
session is opened and a new pair returned; the user's other sessions are untouched, and a
refresh token that was already used is rejected. Caveats a client added to its refresh token
(`operation`, `expires`) carry over to the tokens it mints, so refreshing never widens a token.

Errors are `HTTPException`s a handler can let through: 409 `NameTaken`, 401
`InvalidCredentials` (one message for an unknown name and a wrong password), 422
`InvalidField` (naming the field, in FastAPI's validation-error shape), 429 `Throttled`, and
401 `Unauthorized` for a bad refresh token.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import HTTPException

from ..tasks.connections import PoolSource, resolve_pool
from .authenticator import Authenticator
from .hooks import AuthHooks, SignInFailure
from .keys import SessionKey
from .passwords import Passwords
from .principal import Principal, Unauthorized
from .throttle import Throttle, Throttled
from .tokens import (
    InvalidToken,
    epoch,
    expires_caveat,
    org_caveat,
    parse_caveat,
    type_caveat,
    user_caveat,
)

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{3,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# A refresh token minted here has these many caveats; the ones after them were added by a
# client and carry over (the signature chain proves the first ones are the server's).
_SERVER_REFRESH_CAVEATS = 4
_CARRIED = frozenset({"operation", "expires"})

Role = Literal["owner", "member"]

_USER = "u.id AS user_id, u.name AS user_name, u.default_org_id, u.created_at AS user_created_at"
_ORG = "o.id AS org_id, o.name AS org_name, o.owner_id, o.created_at AS org_created_at"

_INSERT_USER = """
INSERT INTO anchor_users AS u (name, password_hash) VALUES ($1, $2)
ON CONFLICT ((lower(name))) DO NOTHING
RETURNING u.id AS user_id, u.name AS user_name, u.default_org_id, u.created_at AS user_created_at
"""
# The user's first org: the org row, the owner's membership and the user's default, at once.
_CREATE_FIRST_ORG = f"""
WITH o AS (
    INSERT INTO anchor_orgs (name, owner_id) VALUES ($1, $2) RETURNING *
), member AS (
    INSERT INTO anchor_org_members (org_id, user_id, role) SELECT id, $2, 'owner' FROM o
), u AS (
    UPDATE anchor_users SET default_org_id = (SELECT id FROM o) WHERE id = $2
)
SELECT {_ORG} FROM o
"""
# The user by name, with the org a sign-in acts in: the default org if the user is still a
# member of it, else the oldest membership.
_FIND_FOR_SIGN_IN = f"""
SELECT {_USER}, u.password_hash, {_ORG}
FROM anchor_users u
LEFT JOIN LATERAL (
    SELECT o.* FROM anchor_org_members m JOIN anchor_orgs o ON o.id = m.org_id
    WHERE m.user_id = u.id
    ORDER BY o.id = u.default_org_id DESC, m.created_at, o.id
    LIMIT 1
) o ON true
WHERE lower(u.name) = lower($1)
"""
_FIND_MEMBER = f"""
SELECT {_USER}, {_ORG}
FROM anchor_users u
JOIN anchor_org_members m ON m.user_id = u.id AND m.org_id = $2
JOIN anchor_orgs o ON o.id = m.org_id
WHERE u.id = $1
"""
_REHASH = "UPDATE anchor_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"
_GET_USER = f"SELECT {_USER} FROM anchor_users u WHERE u.id = $1"
_LIST_ORGS = f"""
SELECT {_ORG}, m.role
FROM anchor_org_members m JOIN anchor_orgs o ON o.id = m.org_id
WHERE m.user_id = $1
ORDER BY o.id
"""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    default_org_id: int | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Org:
    id: int
    name: str
    owner_id: int | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Membership:
    org: Org
    role: Role


@dataclass(frozen=True, slots=True)
class Credentials:
    """What sign-up, sign-in and refresh return. The tokens stay out of `repr` (and logs)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int  # seconds the access token is valid
    token_type: str = "Bearer"


class NameTaken(HTTPException):
    """409: the name is in use (names are unique whatever their case)."""

    def __init__(self) -> None:
        super().__init__(status_code=409, detail="this name is taken")


class InvalidCredentials(HTTPException):
    """401: unknown name or wrong password; the two are indistinguishable, timing included."""

    def __init__(self) -> None:
        super().__init__(status_code=401, detail="invalid name or password")


class InvalidField(HTTPException):
    """422 naming the field, shaped like FastAPI's request validation errors."""

    def __init__(self, field_name: str, message: str) -> None:
        error = {"type": "value_error", "loc": ["body", field_name], "msg": message}
        super().__init__(status_code=422, detail=[error])
        self.field = field_name


class NoOrganization(HTTPException):
    """403: the credentials are right but the user belongs to no organisation."""

    def __init__(self) -> None:
        super().__init__(status_code=403, detail="this account belongs to no organization")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidField("name", "must be 3 to 64 characters: letters, digits, '_', '.' or '-'")


def check_password(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidField("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


class Accounts:
    """The account service. Settings (token lifetimes) and the clock are the authenticator's,
    so both sides of a token agree on them."""

    def __init__(
        self,
        db: PoolSource,
        authenticator: Authenticator,
        *,
        hooks: AuthHooks | None = None,
        passwords: Passwords | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._db = db
        self.authenticator = authenticator
        self.hooks = hooks or AuthHooks()
        self.passwords = passwords or Passwords()
        self.throttle = throttle or Throttle(db, clock=authenticator.clock)
        settings = authenticator.settings
        self._access_ttl = settings.auth_access_token_ttl
        self._refresh_ttl = settings.auth_refresh_token_ttl

    async def sign_up(self, name: str, password: str) -> Credentials:
        """Create a user, their org ("<name>'s org", owned by them) and sign them in.

        User, org, membership and what the `org_created` / `user_created` hooks write commit
        together or not at all."""
        check_name(name)
        check_password(password)
        password_hash = await self.passwords.hash(password)
        async with resolve_pool(self._db).acquire() as conn, conn.transaction():
            user_row = await conn.fetchrow(_INSERT_USER, name, password_hash)
            if user_row is None:
                raise NameTaken()
            user_id = user_row["user_id"]
            org = _org(await conn.fetchrow(_CREATE_FIRST_ORG, f"{name}'s org", user_id))
            user = replace(_user(user_row), default_org_id=org.id)
            for org_hook in self.hooks.org_created:
                await org_hook(conn, org)
            for user_hook in self.hooks.user_created:
                await user_hook(conn, user)
        log.info("user %d signed up", user.id)
        return await self._open_session(user, org)

    async def sign_in(self, name: str, password: str) -> Credentials:
        """Credentials of a new session, or 401/422/429 (see the module docstring)."""
        check_name(name)
        check_password(password)
        try:
            await self.throttle.attempt(name.lower())
        except Throttled:
            await self._notify_failure(name, "throttled")
            raise
        row = await resolve_pool(self._db).fetchrow(_FIND_FOR_SIGN_IN, name)
        password_hash: str | None = row["password_hash"] if row is not None else None
        matches = await self.passwords.verify(password_hash, password)  # dummy check if None
        if row is None or not matches:
            await self._notify_failure(name, "invalid_credentials")
            raise InvalidCredentials()
        await self.throttle.succeeded(name.lower())
        if password_hash is not None and self.passwords.needs_rehash(password_hash):
            new_hash = await self.passwords.hash(password)
            await resolve_pool(self._db).execute(_REHASH, row["user_id"], password_hash, new_hash)
        if row["org_id"] is None:
            raise NoOrganization()
        return await self._open_session(_user(row), _org(row))

    async def refresh(self, refresh_token: str) -> Credentials:
        """Rotate the refresh token's session: a new pair, the old session revoked."""
        claims, user_id = await self.authenticator.verify(
            refresh_token, token_type="refresh", operation_id=None
        )
        row = await resolve_pool(self._db).fetchrow(_FIND_MEMBER, user_id, claims.org_id)
        if row is None:  # the user has left the org the session acted in
            raise Unauthorized()
        user, org = _user(row), _org(row)
        carried = [
            caveat
            for caveat in claims.caveats[_SERVER_REFRESH_CAVEATS:]
            if parse_caveat(caveat)[0] in _CARRIED
        ]
        extra = await self._token_caveats(user, org)
        keys = self.authenticator.keys
        async with resolve_pool(self._db).acquire() as conn, conn.transaction():
            if not await keys.revoke(claims.key_id, user_id=user.id, conn=conn):
                raise Unauthorized()  # already rotated (or signed out) elsewhere
            key = await keys.create(conn, user.id, self._session_end())
        keys.forget(claims.key_id)
        keys.remember(key)
        return self._credentials(key, user, org, extra, carried)

    async def sign_out(self, principal: Principal) -> None:
        """End the principal's session; the user's other sessions stay signed in."""
        await self.authenticator.keys.revoke(principal.session_id, user_id=principal.user_id)

    async def revoke_user(self, user_id: int) -> int:
        """Sign a user out everywhere; the number of sessions ended."""
        return await self.authenticator.keys.revoke_user(user_id)

    async def revoke_all(self) -> int:
        """Sign everyone out; the number of sessions ended."""
        return await self.authenticator.keys.revoke_all()

    async def get_user(self, user_id: int) -> User | None:
        row = await resolve_pool(self._db).fetchrow(_GET_USER, user_id)
        return _user(row) if row is not None else None

    async def list_orgs(self, user_id: int) -> list[Membership]:
        """The user's organisations and their role in each, oldest first."""
        rows = await resolve_pool(self._db).fetch(_LIST_ORGS, user_id)
        return [Membership(_org(row), row["role"]) for row in rows]

    async def prune(self) -> int:
        """Delete ended sessions and stale throttle counts (e.g. from a cron task)."""
        return await self.authenticator.keys.prune() + await self.throttle.prune()

    # Sessions

    async def _open_session(self, user: User, org: Org) -> Credentials:
        extra = await self._token_caveats(user, org)
        keys = self.authenticator.keys
        async with resolve_pool(self._db).acquire() as conn:
            key = await keys.create(conn, user.id, self._session_end())
        keys.remember(key)
        credentials = self._credentials(key, user, org, extra, ())
        log.info("user %d signed in (session %d)", user.id, key.id)
        for hook in self.hooks.signed_in:
            await _notify(hook, user, org, key.id)
        return credentials

    async def _token_caveats(self, user: User, org: Org) -> list[str]:
        caveats: list[str] = []
        for hook in self.hooks.token_created:
            await hook(user, org, caveats)
        for caveat in caveats:
            try:
                parse_caveat(caveat)
            except InvalidToken:
                raise ValueError(
                    f"a token_created hook added {caveat!r}, which is not a caveat of "
                    "anchor.auth.tokens (type, user, org, expires, operation)"
                ) from None
        return caveats

    def _credentials(
        self,
        key: SessionKey,
        user: User,
        org: Org,
        extra: Sequence[str],
        carried: Sequence[str],
    ) -> Credentials:
        now = epoch(self.authenticator.clock)
        identity = [user_caveat(user.id), org_caveat(org.id)]
        access = self.authenticator.mint(
            key,
            [
                type_caveat("access"),
                *identity,
                expires_caveat(now + self._access_ttl),
                *carried,
                *extra,
            ],
        )
        refresh = self.authenticator.mint(
            key, [type_caveat("refresh"), *identity, expires_caveat(key.expires_at), *carried]
        )
        return Credentials(access, refresh, self._access_ttl)

    def _session_end(self) -> float:
        return epoch(self.authenticator.clock) + self._refresh_ttl

    async def _notify_failure(self, name: str, reason: SignInFailure) -> None:
        for hook in self.hooks.sign_in_failed:
            await _notify(hook, name, reason)


async def _notify(hook: Any, *args: Any) -> None:
    """Run a notification hook; its error is logged, not raised (the fact stands)."""
    try:
        await hook(*args)
    except Exception:
        log.exception("auth notification hook %r failed", hook)


def _user(row: Any) -> User:
    return User(row["user_id"], row["user_name"], row["default_org_id"], row["user_created_at"])


def _org(row: Any) -> Org:
    return Org(row["org_id"], row["org_name"], row["owner_id"], row["org_created_at"])
