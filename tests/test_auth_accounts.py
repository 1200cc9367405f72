"""Accounts (anchor.auth) against real PostgreSQL: sign-up, sign-in, refresh rotation, sign-out,
names and passwords, throttling, hooks, rehashing, and no secrets in the logs."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import HTTPException

from .auth_helpers import PASSWORD, auth_env


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def accepted(env: Any, token: str, operation: str = "getThing") -> bool:
    try:
        await env.authenticator.authenticate(f"Bearer {token}", operation)
    except env.auth.Unauthorized:
        return False
    return True


async def http_error(coro: Any) -> HTTPException:
    with pytest.raises(HTTPException) as info:
        await coro
    return info.value


def test_sign_up_sign_in_refresh_sign_out(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts = env.accounts
            signed_up = await accounts.sign_up("Alice", PASSWORD)
            assert await accepted(env, signed_up.access_token)
            user = await accounts.get_user(1)
            assert user.name == "Alice"
            (membership,) = await accounts.list_orgs(user.id)
            assert membership.org.name == "Alice's org"
            assert membership.org.owner_id == user.id and membership.role == "owner"
            assert user.default_org_id == membership.org.id
            assert await accounts.get_user(999) is None

            signed_in = await accounts.sign_in("aLICE", PASSWORD)  # names match in any case
            principal = await env.authenticator.authenticate(
                f"Bearer {signed_in.access_token}", "getThing"
            )
            assert (principal.user_id, principal.org_id) == (user.id, membership.org.id)

            refreshed = await accounts.refresh(signed_in.refresh_token)
            assert refreshed.access_token != signed_in.access_token
            after = await env.authenticator.authenticate(
                f"Bearer {refreshed.access_token}", "getThing"
            )
            assert after.session_id != principal.session_id
            assert after.org_id == principal.org_id

            await accounts.sign_out(after)
            assert not await accepted(env, refreshed.access_token)
            with pytest.raises(env.auth.Unauthorized):
                await accounts.refresh(refreshed.refresh_token)
            assert await accepted(env, signed_up.access_token)  # another session: untouched

    run(main())


def test_names_are_unique_in_any_case(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            await env.accounts.sign_up("Alice", PASSWORD)
            for name in ("Alice", "alice", "ALICE", "aLiCe"):
                error = await http_error(env.accounts.sign_up(name, "another password"))
                assert isinstance(error, env.auth.NameTaken) and error.status_code == 409
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_users") == 1
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_orgs") == 1
            # concurrent sign-ups of one name: exactly one wins
            results = await asyncio.gather(
                *(env.accounts.sign_up(f"BoB{'b' * (n % 2)}"[:4], PASSWORD) for n in range(6)),
                return_exceptions=True,
            )
            assert sum(not isinstance(r, Exception) for r in results) == 2  # "BoB" and "BoBb"
            assert all(isinstance(r, env.auth.NameTaken | env.auth.Credentials) for r in results)

    run(main())


def test_names_and_passwords_are_validated(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            bad_names = ["ab", "a" * 65, "has space", "ünïcode", "semi;colon", "", "new\nline"]
            for name in bad_names:
                for call in (env.accounts.sign_up, env.accounts.sign_in):
                    error = await http_error(call(name, PASSWORD))
                    assert error.status_code == 422
                    assert error.detail[0]["loc"] == ["body", "name"]
            for password in ["short", "x" * 1025, ""]:
                for call in (env.accounts.sign_up, env.accounts.sign_in):
                    error = await http_error(call("valid.name-1", password))
                    assert error.status_code == 422
                    assert error.detail[0]["loc"] == ["body", "password"]
            for name in ["abc", "a" * 64, "A.b_c-9"]:
                await env.accounts.sign_up(name, "x" * 8)
            await env.accounts.sign_up("long", "p" * 1024)
            await env.accounts.sign_in("long", "p" * 1024)

    run(main())


def test_wrong_password_and_unknown_user_look_the_same(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            await env.accounts.sign_up("alice", PASSWORD)
            wrong = await http_error(env.accounts.sign_in("alice", "wrong password"))
            unknown = await http_error(env.accounts.sign_in("nobody", PASSWORD))
            assert isinstance(wrong, env.auth.InvalidCredentials)
            assert type(wrong) is type(unknown)
            assert (wrong.status_code, wrong.detail, wrong.headers) == (
                unknown.status_code,
                unknown.detail,
                unknown.headers,
            )
            assert wrong.status_code == 401

    run(main())


def test_unknown_users_pay_for_a_password_check(template_package: str, database_url: str) -> None:
    """The dummy verification runs the same argon2 work as a real one."""

    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(hash))
            return super().verify(hash, password)

    async def main() -> None:
        hasher = CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
        async with auth_env(template_package, database_url, hasher=hasher) as env:
            await env.accounts.sign_up("alice", PASSWORD)
            await http_error(env.accounts.sign_in("alice", "wrong password"))
            await http_error(env.accounts.sign_in("nobody", PASSWORD))
            assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)
            assert calls[0] != calls[1]  # alice's hash, then the dummy

    run(main())


def test_failed_sign_ins_are_throttled_per_name(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts, clock = env.accounts, env.clock
            await accounts.sign_up("alice", PASSWORD)
            for _ in range(5):
                error = await http_error(accounts.sign_in("alice", "wrong password"))
                assert error.status_code == 401
            for name in ("alice", "ALICE"):  # refused, even with the right password
                error = await http_error(accounts.sign_in(name, PASSWORD))
                assert isinstance(error, env.auth.Throttled) and error.status_code == 429
                assert error.headers == {"Retry-After": "30"}
            await accounts.sign_up("bobby", PASSWORD)
            await accounts.sign_in("bobby", PASSWORD)  # other names are not affected
            clock.advance(20)
            error = await http_error(accounts.sign_in("alice", PASSWORD))
            assert error.headers == {"Retry-After": "10"}
            # the lock doubles with each failure after one ends: 60 s, 120 s, ...
            for lockout in (60, 120, 240, 480, 900, 900):
                assert error.headers is not None
                clock.advance(int(error.headers["Retry-After"]))
                wrong = await http_error(accounts.sign_in("alice", "wrong password"))
                assert wrong.status_code == 401
                error = await http_error(accounts.sign_in("alice", PASSWORD))
                assert error.headers == {"Retry-After": str(lockout)}
            # a success resets: five more failures are allowed before the next lock
            clock.advance(900)
            await accounts.sign_in("alice", PASSWORD)
            for _ in range(5):
                assert (
                    await http_error(accounts.sign_in("alice", "wrong pass"))
                ).status_code == 401
            assert (await http_error(accounts.sign_in("alice", PASSWORD))).status_code == 429
            # the count starts over after 15 quiet minutes, measured from the end of the lock
            clock.advance(30 + 15 * 60 + 1)
            for _ in range(4):
                assert (
                    await http_error(accounts.sign_in("alice", "wrong pass"))
                ).status_code == 401
            await accounts.sign_in("alice", PASSWORD)

    run(main())


def test_throttling_covers_unknown_names_and_bursts(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts = env.accounts
            for _ in range(5):
                assert (await http_error(accounts.sign_in("ghost", PASSWORD))).status_code == 401
            assert (await http_error(accounts.sign_in("Ghost", PASSWORD))).status_code == 429
            # a parallel burst cannot slip past the limit: attempts are counted up front
            await accounts.sign_up("carol", PASSWORD)
            burst = [accounts.sign_in("carol", f"guess-{n:04d}") for n in range(20)]
            results = await asyncio.gather(*burst, return_exceptions=True)
            codes = sorted(r.status_code for r in results if isinstance(r, HTTPException))
            assert codes == [401] * 5 + [429] * 15
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_auth_throttle") == 2
            env.clock.advance(30 + 15 * 60 + 1)
            assert await accounts.prune() == 2

    run(main())


def test_creation_hooks_run_inside_the_sign_up_transaction(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        hooks_module = importlib.import_module(f"{template_package}.anchor.auth")
        seen: list[tuple[str, Any]] = []

        async def org_created(tx: Any, org: Any) -> None:
            seen.append(("org", org))
            await tx.execute("INSERT INTO audit (note) VALUES ($1)", f"org {org.id}")

        async def user_created(tx: Any, user: Any) -> None:
            seen.append(("user", user))
            # the account is visible inside the transaction
            assert await tx.fetchval("SELECT name FROM anchor_users WHERE id = $1", user.id)
            if user.name == "mallory":
                raise RuntimeError("no mallories")
            await tx.execute("INSERT INTO audit (note) VALUES ($1)", f"user {user.id}")

        hooks = hooks_module.AuthHooks(org_created=[org_created], user_created=[user_created])
        async with auth_env(template_package, database_url, hooks=hooks) as env:
            await env.pool.execute("CREATE TABLE audit (note text)")
            await env.accounts.sign_up("alice", PASSWORD)
            assert [kind for kind, _ in seen] == ["org", "user"]
            org, user = seen[0][1], seen[1][1]
            assert org.owner_id == user.id and user.default_org_id == org.id
            notes = await env.pool.fetch("SELECT note FROM audit ORDER BY note")
            assert [r["note"] for r in notes] == [f"org {org.id}", f"user {user.id}"]

            with pytest.raises(RuntimeError, match="no mallories"):
                await env.accounts.sign_up("mallory", PASSWORD)
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_users") == 1
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_orgs") == 1
            assert await env.pool.fetchval("SELECT count(*) FROM audit") == 2
            assert await env.pool.fetchval("SELECT count(*) FROM anchor_auth_keys") == 1
            # the name is free again
            hooks.user_created.clear()
            await env.accounts.sign_up("mallory", PASSWORD)

    run(main())


def test_token_created_caveats_survive_refresh(template_package: str, database_url: str) -> None:
    async def main() -> None:
        auth = importlib.import_module(f"{template_package}.anchor.auth")
        seen: list[tuple[str, int]] = []

        async def read_only(user: Any, org: Any, caveats: list[str]) -> None:
            seen.append((user.name, org.id))
            caveats.append(auth.operation_caveat("getThing"))

        hooks = auth.AuthHooks(token_created=[read_only])
        async with auth_env(template_package, database_url, hooks=hooks) as env:
            creds = await env.accounts.sign_up("alice", PASSWORD)
            assert await accepted(env, creds.access_token, "getThing")
            assert not await accepted(env, creds.access_token, "deleteThing")
            refreshed = await env.accounts.refresh(creds.refresh_token)
            assert await accepted(env, refreshed.access_token, "getThing")
            assert not await accepted(env, refreshed.access_token, "deleteThing")
            assert seen == [("alice", 1), ("alice", 1)]

            async def bad(user: Any, org: Any, caveats: list[str]) -> None:
                caveats.append("role = admin")

            hooks.token_created[:] = [bad]
            with pytest.raises(ValueError, match="role = admin"):
                await env.accounts.sign_in("alice", PASSWORD)

    run(main())


def test_refresh_rotates_only_its_own_session(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts = env.accounts
            laptop = await accounts.sign_up("alice", PASSWORD)
            phone = await accounts.sign_in("alice", PASSWORD)
            rotated = await accounts.refresh(laptop.refresh_token)
            assert not await accepted(env, laptop.access_token)  # the old session ended
            assert await accepted(env, rotated.access_token)
            assert await accepted(env, phone.access_token)  # the other one did not
            with pytest.raises(env.auth.Unauthorized):  # an already used refresh token
                await accounts.refresh(laptop.refresh_token)
            assert await accepted(env, rotated.access_token)  # ...changes nothing
            again = await accounts.refresh(phone.refresh_token)
            assert await accepted(env, again.access_token)
            assert await accepted(env, rotated.access_token)
            # the same refresh token used twice at once: exactly one refresh wins
            results = await asyncio.gather(
                *(accounts.refresh(again.refresh_token) for _ in range(5)), return_exceptions=True
            )
            assert sum(not isinstance(r, BaseException) for r in results) == 1
            assert all(isinstance(r, env.auth.Unauthorized | env.auth.Credentials) for r in results)
            # another process whose cache still holds the session as valid: rotation is
            # decided by the database, so its refresh of the used token fails too
            replica = env.other_process()
            await replica.authenticate(f"Bearer {rotated.access_token}", "getThing")
            fresh = await accounts.refresh(rotated.refresh_token)
            other = env.auth.Accounts(env.pool, replica, passwords=env.accounts.passwords)
            with pytest.raises(env.auth.Unauthorized):
                await other.refresh(rotated.refresh_token)
            assert await accepted(env, fresh.access_token)

    run(main())


def test_refresh_keeps_client_attenuations(template_package: str, database_url: str) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            auth, clock = env.auth, env.clock
            creds = await env.accounts.sign_up("alice", PASSWORD)
            narrowed = auth.attenuate(
                creds.refresh_token,
                auth.operation_caveat("getThing"),
                auth.expires_caveat(clock.now + 3600),
            )
            refreshed = await env.accounts.refresh(narrowed)
            assert await accepted(env, refreshed.access_token, "getThing")
            assert not await accepted(env, refreshed.access_token, "deleteThing")
            clock.advance(1800)
            again = await env.accounts.refresh(refreshed.refresh_token)
            assert not await accepted(env, again.access_token, "deleteThing")
            clock.advance(1800)  # the client's hour is over, whatever the server's TTLs say
            assert not await accepted(env, again.access_token, "getThing")
            with pytest.raises(auth.Unauthorized):
                await env.accounts.refresh(again.refresh_token)

    run(main())


def test_changed_hasher_parameters_rehash_on_sign_in(
    template_package: str, database_url: str
) -> None:
    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            await env.accounts.sign_up("alice", PASSWORD)
            before = await env.pool.fetchval("SELECT password_hash FROM anchor_users")
            stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
            upgraded = env.auth.Accounts(
                env.pool, env.authenticator, passwords=env.auth.Passwords(stronger)
            )
            await upgraded.sign_in("alice", PASSWORD)
            after = await env.pool.fetchval("SELECT password_hash FROM anchor_users")
            assert after != before and "m=16,t=2" in after
            await upgraded.sign_in("alice", PASSWORD)
            assert await env.pool.fetchval("SELECT password_hash FROM anchor_users") == after
            await env.accounts.sign_in("alice", PASSWORD)  # old parameters verify new hashes

    run(main())


def test_notification_hooks(template_package: str, database_url: str) -> None:
    async def main() -> None:
        auth = importlib.import_module(f"{template_package}.anchor.auth")
        events: list[tuple[Any, ...]] = []

        async def signed_in(user: Any, org: Any, session_id: int) -> None:
            events.append(("signed_in", user.name, org.id, session_id))
            raise RuntimeError("audit log down")  # logged, not raised

        async def failed(name: str, reason: str) -> None:
            events.append(("failed", name, reason))

        hooks = auth.AuthHooks(signed_in=[signed_in], sign_in_failed=[failed])
        async with auth_env(template_package, database_url, hooks=hooks) as env:
            await env.accounts.sign_up("alice", PASSWORD)
            for _ in range(5):
                await http_error(env.accounts.sign_in("alice", "wrong password"))
            await http_error(env.accounts.sign_in("alice", PASSWORD))
            assert events == [
                ("signed_in", "alice", 1, 1),
                *[("failed", "alice", "invalid_credentials")] * 5,
                ("failed", "alice", "throttled"),
            ]

    run(main())


def test_no_token_or_password_is_ever_logged(
    template_package: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_seen: list[str] = []

    async def main() -> None:
        async with auth_env(template_package, database_url) as env:
            accounts = env.accounts
            secrets_seen.append(PASSWORD)
            creds = await accounts.sign_up("alice", PASSWORD)
            signed_in = await accounts.sign_in("alice", PASSWORD)
            refreshed = await accounts.refresh(signed_in.refresh_token)
            for c in (creds, signed_in, refreshed):
                secrets_seen.extend([c.access_token, c.refresh_token])
                assert c.access_token not in repr(c) and c.refresh_token not in repr(c)
            with pytest.raises(env.auth.Unauthorized):
                await accounts.refresh(signed_in.refresh_token)  # reused
            with pytest.raises(env.auth.Unauthorized):
                await accounts.refresh(creds.access_token)  # wrong type
            for n in range(7):
                wrong = f"wrong-password-{n}"
                secrets_seen.append(wrong)
                await http_error(accounts.sign_in("alice", wrong))
            tampered = creds.access_token[:-2] + "AA"
            for token in (tampered, creds.access_token + "x"):
                with pytest.raises(env.auth.Unauthorized):
                    await env.authenticator.authenticate(f"Bearer {token}", "getThing")
            principal = await env.authenticator.authenticate(
                f"Bearer {refreshed.access_token}", "getThing"
            )
            await accounts.sign_out(principal)

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert caplog.records, "expected some log records (sign-up, sign-in)"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        for secret in secrets_seen:
            assert secret not in text, f"{record.name} logged a secret"
            assert secret[:24] not in text, f"{record.name} logged part of a secret"
