"""Bearer tokens: macaroons (pymacaroons, v2 binary, base64url) and their caveat vocabulary.

A token's identifier is its session key id; its root key is `derive_root_key(secret, id,
salt)`, so forging one needs the server secret as well as the key's row. Every caveat is
first-party, written `name = value`, and every one must hold; a name outside this vocabulary
makes the token invalid:

- `type = access|refresh`: what the token is for.
- `user = <id>`: must be the session's user.
- `org = <id>`: the organisation the token acts in; all `org` caveats must agree.
- `expires = <unix seconds>`: valid strictly before this time.
- `operation = <operationId>[,<operationId>...]`: the request's operation must be listed.

Anyone holding a token can narrow it with `attenuate` (or any macaroon library's
add_first_party_caveat); nobody can widen it without the root key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pymacaroons import MACAROON_V2, Macaroon, Verifier
from pymacaroons.serializers.binary_serializer import BinarySerializer

TokenType = Literal["access", "refresh"]
# Returns the current time, as epoch seconds or an aware datetime; injectable for tests.
Clock: TypeAlias = Callable[[], float | dt.datetime]

MAX_TOKEN_LENGTH = 4096
MAX_CAVEATS = 64
MAX_CAVEAT_LENGTH = 1024
CAVEAT_NAMES = frozenset({"type", "user", "org", "expires", "operation"})

_KDF_CONTEXT = b"anchor.auth/session-root-key/v1\x00"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_ID = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
_EPOCH = re.compile(r"[0-9]{1,12}", re.ASCII)
_OPERATION_ID = re.compile(r"[^\s,]{1,200}")
_TYPES = ("access", "refresh")
_SERIALIZER = BinarySerializer()


class InvalidToken(ValueError):
    """The token is malformed, tampered with, or its caveats do not hold. The message says
    why in general terms and never contains the token."""


def epoch(clock: Clock) -> float:
    """`clock()` as epoch seconds."""
    now = clock()
    return now.timestamp() if isinstance(now, dt.datetime) else float(now)


def system_clock() -> float:
    return time.time()


def derive_root_key(secret: bytes, key_id: int, salt: bytes) -> bytes:
    """The macaroon root key of session `key_id`: HMAC-SHA256(secret, context || id || salt)."""
    message = _KDF_CONTEXT + key_id.to_bytes(8, "big") + salt
    return hmac.new(secret, message, hashlib.sha256).digest()


# Caveats


def type_caveat(token_type: TokenType) -> str:
    return f"type = {token_type}"


def user_caveat(user_id: int) -> str:
    return f"user = {user_id}"


def org_caveat(org_id: int) -> str:
    return f"org = {org_id}"


def expires_caveat(when: float | dt.datetime) -> str:
    """Valid strictly before `when` (epoch seconds or an aware datetime), to the second."""
    seconds = when.timestamp() if isinstance(when, dt.datetime) else when
    return f"expires = {int(seconds)}"


def operation_caveat(*operation_ids: str) -> str:
    """Valid only for requests to one of these operations (OpenAPI operationIds)."""
    caveat = "operation = " + ",".join(operation_ids)
    parse_caveat(caveat)
    return caveat


def parse_caveat(caveat: str) -> tuple[str, str | int | frozenset[str]]:
    """(name, value) of a caveat in the vocabulary; `InvalidToken` for anything else."""
    if len(caveat) > MAX_CAVEAT_LENGTH:
        raise InvalidToken("caveat too long")
    name, sep, raw = caveat.partition("=")
    name, raw = name.strip(" "), raw.strip(" ")
    if not sep or name not in CAVEAT_NAMES:
        raise InvalidToken("unknown caveat")
    if name == "type":
        if raw not in _TYPES:
            raise InvalidToken("bad type caveat")
        return name, raw
    if name in ("user", "org"):
        if not _ID.fullmatch(raw):
            raise InvalidToken(f"bad {name} caveat")
        return name, int(raw)
    if name == "expires":
        if not _EPOCH.fullmatch(raw):
            raise InvalidToken("bad expires caveat")
        return name, int(raw)
    operations = [item.strip(" ") for item in raw.split(",")]
    if not all(_OPERATION_ID.fullmatch(item) for item in operations):
        raise InvalidToken("bad operation caveat")
    return name, frozenset(operations)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a token's caveats say, parsed. `check` decides whether they hold for a request."""

    key_id: int
    caveats: tuple[str, ...]
    types: frozenset[str]
    user_ids: frozenset[int]
    org_ids: frozenset[int]
    expires: int | None  # the earliest `expires`
    operations: tuple[frozenset[str], ...]  # one set per `operation` caveat

    @property
    def org_id(self) -> int:
        (org_id,) = self.org_ids  # `check` guarantees exactly one
        return org_id

    def check(
        self, *, token_type: TokenType, user_id: int, now: float, operation_id: str | None
    ) -> None:
        """Raise `InvalidToken` unless every caveat holds. `operation_id=None` (refreshing)
        skips `operation` caveats: refreshed tokens carry them over instead."""
        if self.types != {token_type}:
            raise InvalidToken("wrong token type")
        if self.user_ids != {user_id}:
            raise InvalidToken("wrong user")
        if len(self.org_ids) != 1:
            raise InvalidToken("missing or conflicting org")
        if self.expires is None or now >= self.expires:
            raise InvalidToken("expired")
        if operation_id is not None and not all(operation_id in ops for ops in self.operations):
            raise InvalidToken("operation not allowed")


def parse_claims(key_id: int, caveats: Iterable[str]) -> Claims:
    """Parse every caveat (`InvalidToken` on the first one outside the vocabulary)."""
    kept = tuple(caveats)
    if len(kept) > MAX_CAVEATS:
        raise InvalidToken("too many caveats")
    values: dict[str, list[Any]] = {name: [] for name in CAVEAT_NAMES}
    for caveat in kept:
        name, value = parse_caveat(caveat)
        values[name].append(value)
    return Claims(
        key_id=key_id,
        caveats=kept,
        types=frozenset(values["type"]),
        user_ids=frozenset(values["user"]),
        org_ids=frozenset(values["org"]),
        expires=min(values["expires"], default=None),
        operations=tuple(values["operation"]),
    )


# Macaroons


def mint(root_key: bytes, key_id: int, caveats: Iterable[str]) -> str:
    """A token for session `key_id` with `caveats` (each checked against the vocabulary)."""
    macaroon = Macaroon(location="", identifier=str(key_id), key=root_key, version=MACAROON_V2)
    for caveat in caveats:
        parse_caveat(caveat)
        macaroon.add_first_party_caveat(caveat)
    serialized: str = macaroon.serialize()
    return serialized


def attenuate(token: str, *caveats: str) -> str:
    """`token` narrowed by `caveats` (e.g. `operation_caveat("getCounter")`,
    `expires_caveat(time.time() + 60)`). Needs no key: clients can do it too.
    `InvalidToken` if the token is malformed or a caveat is outside the vocabulary."""
    macaroon, _ = decode(token)
    for caveat in caveats:
        parse_caveat(caveat)
        macaroon.add_first_party_caveat(caveat)
    serialized: str = macaroon.serialize()
    return serialized


def decode(token: str) -> tuple[Any, Claims]:
    """The macaroon in `token` and its parsed caveats; the signature is NOT checked here.

    Only the canonical form `mint` writes is accepted (so one token has one spelling), and
    any failure, whatever the input, is an `InvalidToken`.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or not _BASE64URL.fullmatch(token):
        raise InvalidToken("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if not raw or raw[0] != MACAROON_V2:
        raise InvalidToken("malformed token")
    try:
        macaroon = _SERIALIZER.deserialize_raw(raw)
        canonical = _SERIALIZER.serialize(macaroon) == token
        identifier = bytes(macaroon.identifier_bytes).decode("ascii")
        caveats = []
        for caveat in macaroon.caveats:
            if caveat.verification_key_id is not None or caveat.location:
                raise InvalidToken("third-party caveat")
            caveats.append(bytes(caveat.caveat_id_bytes).decode("utf-8"))
    except InvalidToken:
        raise
    except Exception:  # pymacaroons raises anything from IndexError to its own exceptions
        raise InvalidToken("malformed token") from None
    if not canonical or not _ID.fullmatch(identifier):
        raise InvalidToken("malformed token")
    return macaroon, parse_claims(int(identifier), caveats)


def _any_caveat(predicate: str) -> bool:
    return True  # caveats are judged by Claims.check; the verifier checks the signature only


def verify_signature(macaroon: Any, root_key: bytes) -> None:
    """Raise `InvalidToken` unless the HMAC chain of `macaroon` starts from `root_key`."""
    verifier = Verifier()
    verifier.satisfy_general(_any_caveat)
    try:
        verifier.verify(macaroon, root_key)
    except Exception:
        raise InvalidToken("bad signature") from None
