"""Extension points of sign-up and sign-in, for app code and plugins (an audit log, say).

`org_created` and `user_created` run inside the sign-up transaction, in order (org hooks
first), each given the transaction: what they write commits with the account, and an error
in any of them aborts the whole sign-up. `token_created` runs before each access token is
minted (sign-up, sign-in, refresh) and may append caveats to it, e.g.
`caveats.append(operation_caveat("getCounter"))`; only the caveat vocabulary of
`anchor.auth.tokens` is accepted. `signed_in` and `sign_in_failed` are notifications run
after the fact; their errors are logged, never raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from ..db import Connection
    from .accounts import Org, User

SignInFailure = Literal["invalid_credentials", "throttled"]

OrgCreatedHook: TypeAlias = "Callable[[Connection, Org], Awaitable[None]]"
UserCreatedHook: TypeAlias = "Callable[[Connection, User], Awaitable[None]]"
TokenCreatedHook: TypeAlias = "Callable[[User, Org, list[str]], Awaitable[None]]"
SignedInHook: TypeAlias = "Callable[[User, Org, int], Awaitable[None]]"  # user, org, session id
SignInFailedHook: TypeAlias = "Callable[[str, SignInFailure], Awaitable[None]]"  # name, why


@dataclass
class AuthHooks:
    """Lists of async callables, run in order; append yours."""

    org_created: list[OrgCreatedHook] = field(default_factory=list)
    user_created: list[UserCreatedHook] = field(default_factory=list)
    token_created: list[TokenCreatedHook] = field(default_factory=list)
    signed_in: list[SignedInHook] = field(default_factory=list)
    sign_in_failed: list[SignInFailedHook] = field(default_factory=list)
