"""Password hashing: argon2id (argon2-cffi), run in a thread so the event loop keeps serving.

`verify(None, password)` checks against a dummy hash, so signing in as an unknown user costs
the same time as a wrong password and does not reveal which names exist.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


def cheap_hasher() -> PasswordHasher:
    """Minimal argon2id parameters: fast, and far too weak for anything but tests."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Passwords:
    """Hashes and verifies passwords with one `PasswordHasher` (argon2-cffi's defaults,
    RFC 9106's low-memory argon2id profile, unless another is given)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no hash, a dummy check that always fails."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(32))
            await asyncio.to_thread(self._verify, self._dummy, password)
            return False
        return await asyncio.to_thread(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the hasher's."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError, ValueError):
            return False
