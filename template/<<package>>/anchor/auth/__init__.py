"""Authentication: accounts, organisations and macaroon bearer tokens, on PostgreSQL.

`Authenticator` verifies bearer tokens (it is the `BearerAuth` generated routes depend on);
`Accounts` signs users up and in, refreshes and revokes sessions; `schema.migrate` (or the
`MIGRATIONS_DIR` / `MIGRATIONS_TABLE` set) creates the tables. Token format and caveats:
`anchor.auth.tokens`; extension points: `AuthHooks`.
"""

from .accounts import (
    Accounts,
    Credentials,
    InvalidCredentials,
    InvalidField,
    Membership,
    NameTaken,
    NoOrganization,
    Org,
    Role,
    User,
)
from .authenticator import Authenticator, bearer_token
from .hooks import AuthHooks, SignInFailure
from .keys import KeyStore, SessionKey
from .passwords import Passwords, cheap_hasher
from .principal import BearerAuth, Forbidden, Principal, Unauthorized
from .schema import MIGRATIONS_DIR, MIGRATIONS_TABLE, migrate
from .secret import is_development, resolve_secret
from .throttle import Throttle, Throttled
from .tokens import (
    Claims,
    Clock,
    InvalidToken,
    TokenType,
    attenuate,
    expires_caveat,
    operation_caveat,
)

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATIONS_TABLE",
    "Accounts",
    "AuthHooks",
    "Authenticator",
    "BearerAuth",
    "Claims",
    "Clock",
    "Credentials",
    "Forbidden",
    "InvalidCredentials",
    "InvalidField",
    "InvalidToken",
    "KeyStore",
    "Membership",
    "NameTaken",
    "NoOrganization",
    "Org",
    "Passwords",
    "Principal",
    "Role",
    "SessionKey",
    "SignInFailure",
    "Throttle",
    "Throttled",
    "TokenType",
    "Unauthorized",
    "User",
    "attenuate",
    "bearer_token",
    "cheap_hasher",
    "expires_caveat",
    "is_development",
    "migrate",
    "operation_caveat",
    "resolve_secret",
]
