"""Fuzzing the bearer-token dependency: whatever arrives in `Authorization`, the answer is 401
(or a principal for a genuine token), never an exception of another kind, never a 500."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request as StarletteRequest

from .auth_helpers import PASSWORD, auth_env, make_settings, modules

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutations(draw: st.DrawFn, token: str) -> str:
    """A genuine token with a few random edits: flips, cuts, insertions, swaps, appends."""
    chars = list(token)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "truncate", "swap", "raw"]))
        at = draw(st.integers(0, max(len(chars) - 1, 0)))
        if kind == "replace" and chars:
            chars[at] = draw(st.sampled_from(B64URL + "=+/. \x00é"))
        elif kind == "delete" and chars:
            del chars[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            chars[at:at] = list(draw(st.text(alphabet=B64URL, min_size=1, max_size=8)))
        elif kind == "truncate":
            chars = chars[:at]
        elif kind == "swap" and len(chars) > 1:
            other = draw(st.integers(0, len(chars) - 1))
            chars[at], chars[other] = chars[other], chars[at]
        elif kind == "raw":  # flip one bit of the decoded bytes, re-encode
            raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            index = draw(st.integers(0, len(raw) - 1))
            raw[index] ^= 1 << draw(st.integers(0, 7))
            chars = list(b64(bytes(raw)))
    return "".join(chars)


def token_strategies(token: str) -> st.SearchStrategy[str]:
    return st.one_of(
        mutations(token),
        st.text(max_size=300),
        st.text(alphabet=B64URL, max_size=400),
        st.binary(max_size=300).map(b64),
        st.binary(max_size=300).map(lambda raw: b64(b"\x02" + raw)),  # macaroon v2 prefix
        st.binary(max_size=300).map(lambda raw: b64(b"\x02\x01\x00\x02" + raw)),
        json_values.map(json.dumps),
        json_values.map(lambda value: b64(json.dumps(value).encode())),
        st.just("A" * 100_000),
        st.just(token + "A" * 5000),
    )


def header_values(token: str) -> st.SearchStrategy[bytes]:
    """Raw header bytes: arbitrary, or a scheme and a token with arbitrary spacing."""
    schemed = st.tuples(
        st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer:"]),
        st.sampled_from([" ", "  ", "\t", "", " \t "]),
        token_strategies(token),
    ).map(lambda parts: "".join(parts).encode("utf-8"))
    return st.one_of(st.binary(max_size=2000), schemed)


def request_with(header: bytes | None) -> StarletteRequest:
    headers = [] if header is None else [(b"authorization", header)]
    return StarletteRequest({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.fixture
def fuzz_env(template_package: str, database_url: str) -> Iterator[tuple[Any, Any, Any]]:
    """An event loop kept across hypothesis examples, the services, and genuine credentials."""
    loop = asyncio.new_event_loop()
    context = auth_env(template_package, database_url)
    env = loop.run_until_complete(context.__aenter__())
    try:
        creds = loop.run_until_complete(env.accounts.sign_up("alice", PASSWORD))
        yield loop, env, creds
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


def test_any_header_is_401_never_an_error(fuzz_env: tuple[Any, Any, Any]) -> None:
    loop, env, creds = fuzz_env
    dependency = env.authenticator.require("getThing")
    genuine = f"Bearer {creds.access_token}".encode()

    async def check(header: bytes) -> None:
        try:
            principal = await dependency(request_with(header))
        except env.auth.Unauthorized as exc:
            assert exc.status_code == 401
            assert creds.access_token not in str(exc.detail)
            return
        # only the genuine token (give or take spacing) gets through
        scheme, token = header.decode("latin-1").split()
        assert scheme.lower() == "bearer" and token == creds.access_token, header
        assert principal.user_id == 1

    examples: list[bytes] = []

    @FUZZ
    @given(header_values(creds.access_token))
    def fuzz(header: bytes) -> None:
        examples.append(header)
        loop.run_until_complete(check(header))

    fuzz()
    assert len(examples) >= 200
    loop.run_until_complete(check(genuine))
    with pytest.raises(env.auth.Unauthorized):
        loop.run_until_complete(dependency(request_with(None)))


def test_attenuations_never_widen_and_never_crash(fuzz_env: tuple[Any, Any, Any]) -> None:
    """Random valid caveats appended by a client: the token works only if all of them hold."""
    loop, env, creds = fuzz_env
    auth, now = env.auth, env.clock.now
    caveats = st.one_of(
        st.sampled_from(["type = access", "type = refresh", "user = 1", "user = 2"]),
        st.sampled_from(["org = 1", "org = 2"]),
        st.integers(int(now) - 100, int(now) + 10**6).map(lambda t: f"expires = {t}"),
        st.lists(st.sampled_from(["getThing", "putThing", "x"]), min_size=1, max_size=3).map(
            lambda ops: "operation = " + ",".join(ops)
        ),
    )

    async def check(added: list[str]) -> None:
        token = auth.attenuate(creds.access_token, *added)
        try:
            principal = await env.authenticator.authenticate(f"Bearer {token}", "getThing")
        except auth.Unauthorized:
            return
        for caveat in added:  # it got through: every added caveat holds
            name, value = caveat.split(" = ")
            if name == "expires":
                assert int(value) > now, caveat
            elif name == "operation":
                assert "getThing" in value.split(","), caveat
            else:
                assert value == {"type": "access", "user": "1", "org": "1"}[name], caveat
        assert principal.caveats == (
            *principal.caveats[: len(principal.caveats) - len(added)],
            *added,
        )

    examples: list[list[str]] = []

    @FUZZ
    @given(st.lists(caveats, max_size=6))
    def fuzz(added: list[str]) -> None:
        examples.append(added)
        loop.run_until_complete(check(added))

    fuzz()
    assert len(examples) >= 200


def test_http_requests_with_garbage_get_401(template_package: str, database_url: str) -> None:
    """Through a real FastAPI app and HTTP client: 401 with `WWW-Authenticate`, never a 500."""
    auth, _ = modules(template_package)
    app_settings = make_settings(template_package, database_url=database_url)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with auth_env(template_package, database_url) as env:
            authenticator = auth.Authenticator(env.pool, app_settings, clock=env.clock)
            state["dependency"] = authenticator.require("getThing")
            state["token"] = (await env.accounts.sign_up("alice", PASSWORD)).access_token
            yield

    async def principal(request: Request) -> Any:
        return await state["dependency"](request)

    app = FastAPI(lifespan=lifespan)

    @app.get("/thing", dependencies=[Depends(principal)])  # local names: no annotations
    async def get_thing() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app, raise_server_exceptions=False) as client:
        token = state["token"]
        assert client.get("/thing", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        examples: list[str] = []
        printable = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")

        @settings(FUZZ, max_examples=100)
        @given(
            st.one_of(
                st.text(alphabet=printable, max_size=500),
                token_strategies(token).filter(lambda t: t.isascii() and t.isprintable()),
            )
        )
        def fuzz(value: str) -> None:
            examples.append(value)
            value = value.strip(" \t")
            if value in (token, f"Bearer {token}"):
                return
            for header in (value, f"Bearer {value}"):
                raw = header.encode("utf-8")  # non-ASCII arrives as raw bytes
                response = client.get("/thing", headers={"Authorization": raw})
                assert response.status_code == 401, (response.status_code, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert token not in response.text

        fuzz()
        assert len(examples) >= 100
