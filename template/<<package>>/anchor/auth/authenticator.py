"""The bearer-token verifier: `BearerAuth` for generated routes, and minting for `Accounts`.

A token's first use costs one key lookup (a query, unless the key is cached) and the HMAC
chain; the verified token is then cached by its exact text (a bounded LRU), so later requests
with it cost dictionary lookups only: its caveats (type, expiry, operation) are checked again
against each request, and its session against the key cache, which rereads a key at most every
AUTH_REVOCATION_DELAY seconds. Whatever goes wrong, the caller gets `Unauthorized`, whose
detail never contains the token; nothing here logs tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from fastapi import Request

from ..settings import Settings
from ..tasks.connections import PoolSource
from .keys import KeyStore, SessionKey
from .principal import Principal, Unauthorized
from .secret import resolve_secret
from .tokens import (
    MAX_TOKEN_LENGTH,
    Claims,
    Clock,
    InvalidToken,
    TokenType,
    decode,
    epoch,
    mint,
    system_clock,
    verify_signature,
)

MAX_CACHED_TOKENS = 4096
MAX_CACHED_KEYS = 10_000


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case)."""
    if not authorization:
        raise Unauthorized(token_sent=False)
    if len(authorization) > MAX_TOKEN_LENGTH + 64:
        raise Unauthorized()
    scheme, _, token = authorization.strip(" \t").partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    return token


class Authenticator:
    """Verifies bearer tokens (implements `BearerAuth`) and mints them for `Accounts`.

    Building it checks the secret: outside development a missing or weak AUTH_SECRET raises
    `SettingsError` here, at startup. `secret=` bypasses the settings (tests).
    """

    def __init__(
        self,
        db: PoolSource,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        secret: bytes | None = None,
        max_cached_tokens: int = MAX_CACHED_TOKENS,
        max_cached_keys: int = MAX_CACHED_KEYS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.keys = KeyStore(
            db,
            secret if secret is not None else resolve_secret(settings),
            revocation_delay=settings.auth_revocation_delay,
            clock=clock,
            max_cached=max_cached_keys,
        )
        self._verified: OrderedDict[str, Claims] = OrderedDict()
        self._max_tokens = max_cached_tokens

    def require(self, operation_id: str) -> Callable[[Request], Awaitable[Principal]]:
        """The FastAPI dependency of one operation: its caller's `Principal`, or 401."""

        async def bearer_principal(request: Request) -> Principal:
            return await self.authenticate(request.headers.get("authorization"), operation_id)

        return bearer_principal

    async def authenticate(self, authorization: str | None, operation_id: str) -> Principal:
        """The principal of an `Authorization` header value, for `operation_id`."""
        claims, user_id = await self.verify(
            bearer_token(authorization), token_type="access", operation_id=operation_id
        )
        return Principal(
            user_id=user_id,
            org_id=claims.org_id,
            session_id=claims.key_id,
            caveats=claims.caveats,
        )

    async def verify(
        self, token: str, *, token_type: TokenType, operation_id: str | None
    ) -> tuple[Claims, int]:
        """The token's claims and user id if it is genuine, of `token_type`, unexpired, not
        revoked and allowed for `operation_id` (None: any); otherwise `Unauthorized`."""
        try:
            key: SessionKey | None
            claims = self._verified.get(token)
            if claims is None:
                claims, key = await self._verify_signature(token)
            else:
                self._verified.move_to_end(token)
                key = await self.keys.get(claims.key_id)
            now = epoch(self.clock)
            if key is None or not key.usable(now):
                raise InvalidToken("session ended")
            claims.check(
                token_type=token_type, user_id=key.user_id, now=now, operation_id=operation_id
            )
        except InvalidToken:
            raise Unauthorized() from None
        return claims, key.user_id

    def mint(self, key: SessionKey, caveats: Iterable[str]) -> str:
        """A token of session `key` carrying `caveats` (checked against the vocabulary)."""
        return mint(key.root_key, key.id, caveats)

    async def _verify_signature(self, token: str) -> tuple[Claims, SessionKey]:
        """Decode a token seen for the first time and check its HMAC chain; cache it."""
        macaroon, claims = decode(token)
        key = await self.keys.get(claims.key_id)
        if key is None:
            raise InvalidToken("unknown session")
        verify_signature(macaroon, key.root_key)
        self._verified[token] = claims
        if len(self._verified) > self._max_tokens:
            self._verified.popitem(last=False)
        return claims, key
