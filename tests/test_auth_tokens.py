"""Bearer tokens (anchor.auth) against real PostgreSQL: verification, caveats, attenuation,
tampering, expiry, revocation and its cache, forging from a dump, and the secret rules."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from .auth_helpers import PASSWORD, SECRET, CountingPool, auth_env, make_settings, modules


@pytest.fixture(scope="module")
def auth(template_package: str) -> ModuleType:
    return modules(template_package)[0]


@pytest.fixture(scope="module")
def tokens(template_package: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"{template_package}.anchor.auth.tokens")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def rejected(authenticator: Any, token: str, operation: str = "getThing") -> bool:
    try:
        await authenticator.authenticate(f"Bearer {token}", operation)
    except HTTPException as exc:
        assert type(exc).__name__ == "Unauthorized", exc
        assert exc.status_code == 401
        assert exc.headers is not None
        assert exc.headers["WWW-Authenticate"].startswith("Bearer")
        assert token not in str(exc.detail)
        return True
    return False


# Caveats and the token format (no database)


def test_caveat_vocabulary(tokens: ModuleType) -> None:
    parse = tokens.parse_caveat
    assert parse("type = access") == ("type", "access")
    assert parse("user=12") == ("user", 12)
    assert parse("org = 3") == ("org", 3)
    assert parse("expires = 1800000000") == ("expires", 1800000000)
    assert parse("operation = a, b,c") == ("operation", frozenset({"a", "b", "c"}))
    for bad in [
        "role = admin",  # unknown name
        "type = admin",
        "user = 0",
        "user = -1",
        "user = 1.5",
        "user = ١٢",  # non-ASCII digits
        "org = ",
        "expires = soon",
        "operation = ",
        "operation = a,,b",
        "operation = a b",
        "type access",
        "",
        "x" * 2000,
    ]:
        with pytest.raises(tokens.InvalidToken):
            parse(bad)


def test_tokens_are_compact_url_safe_macaroons(tokens: ModuleType) -> None:
    key = tokens.derive_root_key(SECRET.encode(), 42, b"s" * 32)
    caveats = ["type = access", "user = 1", "org = 2", "expires = 1800000900"]
    token = tokens.mint(key, 42, caveats)
    assert len(token) < 200
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    macaroon, claims = tokens.decode(token)
    assert macaroon.identifier == b"42"
    assert claims.key_id == 42 and claims.caveats == tuple(caveats)
    tokens.verify_signature(macaroon, key)
    # pymacaroons reads it as a standard v2 macaroon
    from pymacaroons import Macaroon, Verifier

    verifier = Verifier()
    for caveat in caveats:
        verifier.satisfy_exact(caveat)
    assert verifier.verify(Macaroon.deserialize(token), key)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify_signature(macaroon, tokens.derive_root_key(b"other" * 8, 42, b"s" * 32))
    with pytest.raises(tokens.InvalidToken):  # an unknown caveat is refused when minting
        tokens.mint(key, 42, ["role = admin"])
    with pytest.raises(tokens.InvalidToken):
        tokens.attenuate(token, "role = admin")


# Verification against the database


def test_access_token_gives_the_principal(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            assert creds.token_type == "Bearer" and creds.expires_in == 900
            orgs = await env.accounts.list_orgs(1)
            for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
                principal = await env.authenticator.authenticate(
                    f"{scheme} {creds.access_token}", "getThing"
                )
                assert principal.user_id == 1
                assert principal.org_id == orgs[0].org.id
                assert principal.caveats[0] == "type = access"
                assert "user = 1" in principal.caveats
            # the dependency reads the Authorization header
            dependency = env.authenticator.require("getThing")
            request = _request({"authorization": f"Bearer {creds.access_token}"})
            assert (await dependency(request)).session_id == principal.session_id
            for header in [
                None,
                "",
                "Bearer",
                "Bearer ",
                f"Basic {creds.access_token}",
                creds.access_token,  # no scheme
                f"Token {creds.access_token}",
                f"Bearer {creds.access_token} extra",
            ]:
                with pytest.raises(env.auth.Unauthorized):
                    await env.authenticator.authenticate(header, "getThing")

    run(main())


def _request(headers: dict[str, str]) -> Any:
    from starlette.requests import Request

    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def test_tampered_tokens_are_rejected(
    template_package: str, database_url: str, tokens: ModuleType
) -> None:
    from pymacaroons import Macaroon

    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            alice = await env.accounts.sign_up("alice", PASSWORD)
            bob = await env.accounts.sign_up("bobby", PASSWORD)
            token = alice.access_token
            assert not await rejected(env.authenticator, token)
            original, _ = tokens.decode(token)

            def rebuilt(identifier: bytes, caveats: list[bytes], signature: str) -> str:
                macaroon = Macaroon(identifier=identifier, version=2, location="")
                for caveat in caveats:
                    macaroon.add_first_party_caveat(caveat)  # chain from a zero key...
                macaroon.signature = signature  # ...then put the original signature back
                return str(macaroon.serialize())

            ids = [c.caveat_id_bytes for c in original.caveats]
            signature = original.signature
            forged = [
                rebuilt(b"1", ids[:-1], signature),  # last caveat (expires) removed
                rebuilt(b"1", [ids[0], ids[2], ids[3]], signature),  # user caveat removed
                rebuilt(b"1", [ids[0], b"user = 2", *ids[2:]], signature),  # user changed
                rebuilt(b"1", [ids[0], ids[1], ids[2], b"expires = 9999999999"], signature),
                rebuilt(b"2", ids, signature),  # another session's key id
                rebuilt(b"1", ids, signature[:-1] + ("0" if signature[-1] != "0" else "1")),
            ]
            # a bit flipped anywhere in the encoded token
            raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            for index in range(len(raw)):
                flipped = bytearray(raw)
                flipped[index] ^= 0x01
                forged.append(base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("="))
            forged += [token + "A", token[:-1], token + "==", " " + token[1:], token.upper()]
            # Bob's valid caveats on Alice's session, and vice versa
            bob_macaroon, _ = tokens.decode(bob.access_token)
            bob_ids = [c.caveat_id_bytes for c in bob_macaroon.caveats]
            forged.append(rebuilt(b"1", bob_ids, bob_macaroon.signature))
            for bad in forged:
                assert bad != token
                assert await rejected(env.authenticator, bad), bad

    run(main())


def test_attenuated_tokens_work_only_within_their_limits(
    template_package: str, database_url: str, tokens: ModuleType
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            auth, clock = env.auth, env.clock
            creds = await env.accounts.sign_up("alice", PASSWORD)
            token = creds.access_token
            read_only = auth.attenuate(token, auth.operation_caveat("getThing", "listThings"))
            assert not await rejected(env.authenticator, read_only, "getThing")
            assert not await rejected(env.authenticator, read_only, "listThings")
            assert await rejected(env.authenticator, read_only, "deleteThing")
            # narrowing again intersects: only getThing is in both lists
            narrower = auth.attenuate(read_only, auth.operation_caveat("getThing", "deleteThing"))
            assert not await rejected(env.authenticator, narrower, "getThing")
            assert await rejected(env.authenticator, narrower, "deleteThing")
            assert await rejected(env.authenticator, narrower, "listThings")
            # a shorter life
            short = auth.attenuate(token, auth.expires_caveat(clock.now + 60))
            assert not await rejected(env.authenticator, short)
            # attenuating cannot change identity or type: conflicting caveats all fail
            other_org = auth.attenuate(token, "org = 999")
            assert await rejected(env.authenticator, other_org)
            as_refresh = auth.attenuate(token, "type = refresh")
            assert await rejected(env.authenticator, as_refresh)
            with pytest.raises(env.auth.Unauthorized):
                await env.accounts.refresh(as_refresh)
            other_user = auth.attenuate(token, "user = 2")
            assert await rejected(env.authenticator, other_user)
            # a later expires does not extend the token
            later = auth.attenuate(token, auth.expires_caveat(clock.now + 10**6))
            clock.advance(61)
            assert await rejected(env.authenticator, short)
            assert not await rejected(env.authenticator, later)
            clock.advance(900)
            assert await rejected(env.authenticator, later)

    run(main())


def test_expiry_follows_the_clock_without_any_worker(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            env.clock.advance(899)
            assert not await rejected(env.authenticator, creds.access_token)
            env.clock.advance(1)
            assert await rejected(env.authenticator, creds.access_token)
            env.clock.advance(7 * 24 * 3600 - 901)
            renewed = await env.accounts.refresh(creds.refresh_token)  # refresh still valid
            assert not await rejected(env.authenticator, renewed.access_token)
            env.clock.advance(7 * 24 * 3600)
            with pytest.raises(env.auth.Unauthorized):
                await env.accounts.refresh(renewed.refresh_token)

    run(main())


def test_tokens_of_the_wrong_type_are_rejected(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            assert await rejected(env.authenticator, creds.refresh_token)
            with pytest.raises(env.auth.Unauthorized):
                await env.accounts.refresh(creds.access_token)

    run(main())


def test_revocation_is_immediate_here_and_bounded_elsewhere(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            replica = env.other_process()  # AUTH_REVOCATION_DELAY = 5 s
            uncached = env.other_process(auth_revocation_delay=0)
            for authenticator in (env.authenticator, replica, uncached):
                assert not await rejected(authenticator, creds.access_token)
            principal = await env.authenticator.authenticate(
                f"Bearer {creds.access_token}", "getThing"
            )
            await env.accounts.sign_out(principal)
            assert await rejected(env.authenticator, creds.access_token)  # this process: at once
            assert await rejected(uncached, creds.access_token)  # delay 0: at once
            env.clock.advance(4.9)
            assert not await rejected(replica, creds.access_token)  # within the delay
            env.clock.advance(0.2)
            assert await rejected(replica, creds.access_token)  # after it
            with pytest.raises(env.auth.Unauthorized):
                await env.accounts.refresh(creds.refresh_token)

    run(main())


def test_revoke_a_user_or_everyone(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts = env.accounts
            a1 = await accounts.sign_up("alice", PASSWORD)
            a2 = await accounts.sign_in("alice", PASSWORD)
            b1 = await accounts.sign_up("bobby", PASSWORD)
            assert await accounts.revoke_user(1) == 2
            assert await rejected(env.authenticator, a1.access_token)
            assert await rejected(env.authenticator, a2.access_token)
            assert not await rejected(env.authenticator, b1.access_token)
            a3 = await accounts.sign_in("alice", PASSWORD)  # signing in again works
            assert not await rejected(env.authenticator, a3.access_token)
            assert await accounts.revoke_all() == 2
            for creds in (a3, b1):
                assert await rejected(env.authenticator, creds.access_token)
                with pytest.raises(env.auth.Unauthorized):
                    await accounts.refresh(creds.refresh_token)
            after = await accounts.sign_in("bobby", PASSWORD)
            assert not await rejected(env.authenticator, after.access_token)
            assert await accounts.prune() >= 4  # revoked sessions are deleted

    run(main())


def test_a_database_dump_cannot_forge_tokens(
    template_package: str, database_url: str, tokens: ModuleType
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            org_id = (await env.accounts.list_orgs(1))[0].org.id
            row = await env.pool.fetchrow("SELECT id, user_id, salt FROM anchor_auth_keys")
            key_id, salt = row["id"], bytes(row["salt"])
            caveats = [
                "type = access",
                f"user = {row['user_id']}",
                f"org = {org_id}",
                f"expires = {int(env.clock.now) + 600}",
            ]
            guesses = [b"", salt, SECRET.encode()[:-1], b"change-me", os.urandom(32)]
            for guess in guesses:
                # the salt as the root key, or the key derived with a guessed secret
                for root_key in (guess, tokens.derive_root_key(guess, key_id, salt)):
                    forged = tokens.mint(root_key, key_id, caveats)
                    assert await rejected(env.authenticator, forged)
            # the method is right: with the real secret the same token is accepted
            genuine = tokens.mint(
                tokens.derive_root_key(SECRET.encode(), key_id, salt), key_id, caveats
            )
            assert not await rejected(env.authenticator, genuine)
            assert creds.access_token != genuine

    run(main())


def test_verified_tokens_cost_no_query_and_caches_are_bounded(
    template_package: str, database_url: str, tokens: ModuleType
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            counting = CountingPool(env.pool)
            authenticator = env.auth.Authenticator(
                counting, env.settings, clock=env.clock, max_cached_tokens=3, max_cached_keys=2
            )
            header = f"Bearer {creds.access_token}"
            await authenticator.authenticate(header, "getThing")
            assert counting.queries == 1  # the key, once
            for _ in range(100):
                await authenticator.authenticate(header, "getThing")
            assert counting.queries == 1
            env.clock.advance(5.5)  # the key is reread after AUTH_REVOCATION_DELAY
            await authenticator.authenticate(header, "getThing")
            assert counting.queries == 2
            # many distinct valid tokens (attenuations): the token cache stays bounded
            for n in range(20):
                narrowed = env.auth.attenuate(creds.access_token, f"expires = {2 * 10**9 + n}")
                await authenticator.authenticate(f"Bearer {narrowed}", "getThing")
            assert len(authenticator._verified) == 3
            # unknown key ids are never cached; known ones are bounded
            for key_id in range(1000, 1050):
                bogus = tokens.mint(b"k" * 32, key_id, ["type = access"])
                assert await rejected(authenticator, bogus)
            assert len(authenticator.keys._cache) <= 2
            assert all(key_id < 1000 for key_id in authenticator.keys._cache)
            assert len(authenticator._verified) == 3

    run(main())


def test_unauthorized_response_never_echoes_the_token(
    template_package: str, database_url: str
) -> None:
    async def main() -> tuple[str, str]:
        async with auth_env(template_package, database_url) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            await env.accounts.revoke_all()
            valid = await env.accounts.sign_in("alice", PASSWORD)
            return creds.access_token, valid.access_token

    token, valid = run(main())
    auth, _ = modules(template_package)
    settings = make_settings(template_package, database_url=database_url)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        state["dependency"] = auth.Authenticator(state["pool"], settings).require("getThing")
        yield
        await state["pool"].close()

    async def principal(request: Request) -> Any:
        return await state["dependency"](request)

    app = FastAPI(lifespan=lifespan)

    @app.get("/thing", dependencies=[Depends(principal)])  # local names: no annotations
    async def get_thing() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as client:
        for headers in [{}, {"Authorization": f"Bearer {token}"}, {"Authorization": "Bearer x"}]:
            response = client.get("/thing", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert token not in response.text
            assert response.json() == {"detail": "a valid bearer token is required"}
        assert client.get("/thing", headers={"Authorization": f"Bearer {valid}"}).json() == {
            "ok": True
        }


# The secret


def test_secret_is_required_and_strong_outside_development(
    template_package: str, tmp_path: Path
) -> None:
    auth, settings_module = modules(template_package)
    error = settings_module.SettingsError

    def build(**fields: Any) -> Any:
        fields.setdefault("embedded_pg_dir", tmp_path / "pgdata")
        return auth.Authenticator(None, make_settings(template_package, **fields))

    weak = [
        None,
        "",
        "short-secret",
        "change-me",
        "change-me-change-me-change-me-change-me",
        "CHANGE_ME_PLEASE_0123456789abcdefghijk",
        "a" * 64,
        "abababababababababababababababababab",
        "secret-secret-secret-secret-secret",
        "your-secret-here-your-secret-here-xx",
    ]
    for value in weak:
        for env in ({}, {"environment": "production"}):
            with pytest.raises(error, match="AUTH_SECRET") as info:
                build(auth_secret=value, **env)
            if value:
                assert value not in str(info.value)
    # ENVIRONMENT=production wins over a missing DATABASE_URL
    with pytest.raises(error, match="AUTH_SECRET"):
        build(auth_secret=None, database_url=None, environment="production")
    build(auth_secret=SECRET)
    assert not (tmp_path / "auth-secret").exists()


def test_development_generates_and_keeps_a_secret(
    template_package: str, tmp_path: Path, database_url: str
) -> None:
    auth, _ = modules(template_package)
    pgdata = tmp_path / "anchor" / "pgdata"
    dev = make_settings(
        template_package, database_url=None, auth_secret=None, embedded_pg_dir=pgdata
    )
    first = auth.Authenticator(None, dev)
    secret_file = tmp_path / "anchor" / "auth-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert auth.resolve_secret(dev) == secret.encode()
    # ENVIRONMENT=development with a DATABASE_URL uses the same file
    explicit = dev.model_copy(update={"database_url": database_url, "environment": "development"})
    assert auth.is_development(explicit)
    assert auth.resolve_secret(explicit) == secret.encode()
    # a weak secret set on purpose is accepted in development
    assert auth.resolve_secret(dev.model_copy(update={"auth_secret": _secret("dev")})) == b"dev"

    async def main() -> None:  # tokens survive a restart (a new Authenticator)
        async with auth_env(
            template_package,
            database_url,
            database_url=None,
            auth_secret=None,
            embedded_pg_dir=pgdata,
        ) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            restarted = env.auth.Authenticator(env.pool, dev, clock=env.clock)
            assert not await rejected(restarted, creds.access_token)
            assert first.keys._secret == restarted.keys._secret

    run(main())


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
