"""What generated routes and handlers see of authentication: the principal and the errors.

Generated code depends on this module only: `BearerAuth.require(operation_id)` is the FastAPI
dependency of an operation with `security: [{BearerAuth: [...]}]`, `Principal` is what it
returns, and `Forbidden` is what a failed `x-check-rules` check raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import HTTPException, Request


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified bearer of an access token.

    `session_id` is the sign-in session (the root key) the token belongs to; `caveats` are
    the token's first-party caveats as written, the server's and any the client added.
    """

    user_id: int
    org_id: int
    session_id: int
    caveats: tuple[str, ...] = ()


class Unauthorized(HTTPException):
    """401 with `WWW-Authenticate: Bearer`: no usable access token. The detail never echoes it.

    As RFC 6750 asks, the header names the `invalid_token` error only when a token was sent.
    """

    def __init__(
        self, detail: str = "a valid bearer token is required", *, token_sent: bool = True
    ) -> None:
        challenge = 'Bearer error="invalid_token"' if token_sent else "Bearer"
        super().__init__(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


class Forbidden(HTTPException):
    """403: the token is valid but a check rule of the operation denied the request."""

    def __init__(self, rule: str) -> None:
        super().__init__(status_code=403, detail=f"forbidden: {rule} denied the request")
        self.rule = rule


class BearerAuth(Protocol):
    """Verifies bearer tokens; `anchor.auth.Authenticator` is the implementation."""

    def require(self, operation_id: str) -> Callable[[Request], Awaitable[Principal]]:
        """The dependency of one operation: the principal, or `Unauthorized`."""
        ...
