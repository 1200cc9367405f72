"""OpenAPI security in the generated server: bearer authentication and x-check-rules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import HTTPException, Request

from .test_openapi_codegen import (
    FIXTURES,
    assert_ruff_passes,
    expected_line,
    import_api,
    mypy_strict,
    package_dir,
    write_package,
)

SECURED = FIXTURES / "secured.yaml"

# A small secured spec; the bad ones below are edits of it.
SPEC = """\
openapi: 3.0.3
info: {title: T, version: "1"}
security:
  - Bearer: []
x-check-rules:
  IsOrgMember:
    description: Member of the org
    parameters:
      - {name: orgId, schema: {type: integer}}
      - {name: role, schema: {type: string, enum: [member, owner]}}
  HasTag:
    parameters:
      - {name: tag, schema: {type: string}}
paths:
  /me:
    get:
      operationId: getMe
      responses:
        "200": {description: ok}
  /orgs/{orgId}:
    get:
      operationId: getOrg
      security:
        - Bearer: ['IsOrgMember(orgId, "member")']
      parameters:
        - {name: orgId, in: path, required: true, schema: {type: integer}}
        - {name: q, in: query, schema: {type: string}}
        - {name: trace, in: header, schema: {type: string}}
      responses:
        "200": {description: ok}
components:
  securitySchemes:
    Bearer: {type: http, scheme: bearer}
    Key: {type: apiKey, in: header, name: X-Key}
"""

# The scope of getOrg.
SCOPE = """'IsOrgMember(orgId, "member")'"""


def scope(text: str) -> str:
    """SPEC with the scope of getOrg replaced by `text`."""
    return SPEC.replace(SCOPE, text)


@pytest.fixture(scope="module")
def openapi(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.codegen.openapi")


@pytest.fixture(scope="module")
def secured_files(openapi: ModuleType) -> dict[str, str]:
    return openapi.render_api(SECURED)


@pytest.fixture(scope="module")
def secured_api(secured_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return import_api(tmp_path_factory.mktemp("secured"), secured_files)


class FakeAuth:
    """A BearerAuth whose tokens are `user-<id>`, recording what it is asked for and when.

    `runtime` is the anchor/auth/principal.py module the generated server imported.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.required: list[str] = []  # require() calls: when the router is built
        self.authenticated: list[str] = []  # the dependencies' calls: one per request

    def require(self, operation_id: str) -> Callable[[Request], Awaitable[Any]]:
        self.required.append(operation_id)

        async def dependency(request: Request) -> Any:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not token.startswith("user-"):
                raise self.runtime.Unauthorized()
            self.authenticated.append(operation_id)
            return self.runtime.Principal(user_id=int(token[5:]), org_id=5, session_id=9)

        return dependency


def fake_auth(api: Any) -> FakeAuth:
    return FakeAuth(sys.modules[api.server.Principal.__module__])


def implementations(api: Any, calls: list[tuple[Any, ...]]) -> tuple[Any, Any]:
    """Handlers and check rules for secured.yaml: user 1 owns org 5, other users are members."""
    models = api.models

    class Handlers(api.ApiHandlers):  # type: ignore[misc,name-defined]
        async def health(self) -> None:
            calls.append(("health",))

        async def get_me(self, principal: Any) -> Any:
            calls.append(("get_me", principal))
            return models.Me(user_id=principal.user_id, org_id=principal.org_id)

        async def create_project(self, principal: Any, *, org_id: int, body: Any) -> Any:
            calls.append(("create_project", principal.user_id, org_id, body.name))
            return body

        async def get_project(self, principal: Any, **kwargs: Any) -> Any:
            calls.append(("get_project", principal.user_id, kwargs))
            return models.Project(name=kwargs["project"])

    class Rules(api.CheckRules):  # type: ignore[misc,name-defined]
        async def is_org_member(self, principal: Any, org_id: int, role: str) -> bool:
            calls.append(("is_org_member", principal.user_id, org_id, role))
            return org_id == principal.org_id and (role == "member" or principal.user_id == 1)

        async def can_see_project(
            self, principal: Any, org_id: int, project: str, include_archived: bool
        ) -> bool:
            calls.append(("can_see_project", org_id, project, include_archived))
            if project == "missing":
                raise HTTPException(status_code=404, detail="No such project")
            return project != "secret"

        async def within_quota(
            self, principal: Any, org_id: int, resource: str, cost: float, limit: int | None
        ) -> bool:
            calls.append(("within_quota", org_id, resource, cost, limit))
            return True

        async def is_staff(self, principal: Any) -> bool:
            return False

    return Handlers(), Rules()


# -- rendering ----------------------------------------------------------------------------------


def test_secured_server_reads_like_fastapi(secured_files: dict[str, str]) -> None:
    server = secured_files["server.py"]
    assert "from ...anchor.auth.principal import BearerAuth, Forbidden, Principal\n" in server
    assert (
        "def build_router(handlers: ApiHandlers, *, auth: BearerAuth, checks: CheckRules)"
        " -> APIRouter:" in server
    )
    assert "async def get_me(self, principal: Principal) -> models.Me:" in server
    assert "async def health(self) -> None:" in server
    assert (
        "    async def get_me(principal: Annotated[Principal, "
        'Depends(auth.require("getMe"))]) -> models.Me:\n'
        "        return await handlers.get_me(principal)\n" in server
    )
    assert (
        '        if not await checks.is_org_member(principal, org_id, "owner"):\n'
        '            raise Forbidden("IsOrgMember")\n'
        '        if not await checks.within_quota(principal, org_id, "projects", 1, None):\n'
        '            raise Forbidden("WithinQuota")\n'
        "        return await handlers.create_project(principal, org_id=org_id, body=body)\n"
        in server
    )
    # A query parameter named `principal` keeps its name in the API only.
    assert 'principal_: Annotated[str | None, Query(alias="principal")] = None' in server
    # Unused rules are part of the interface too.
    assert "    async def is_staff(self, principal: Principal) -> bool:" in server
    assert (
        "    async def within_quota(\n        self,\n        principal: Principal,\n"
        "        org_id: int,\n        resource: str,\n        cost: float,\n"
        "        limit: int | None,\n    ) -> bool:" in server
    )
    init = secured_files["__init__.py"]
    assert '__all__ = ["ApiHandlers", "CheckRules", "build_router", "models"]' in init


def test_unsecured_specs_do_not_mention_auth(openapi: ModuleType) -> None:
    for fixture in ("counter.yaml", "jobs.yaml", "edge.yaml"):
        files = openapi.render_api(FIXTURES / fixture)
        for word in ("principal", "Principal", "auth", "checks", "CheckRules", "Depends"):
            assert word not in files["server.py"] + files["__init__.py"], (fixture, word)


def test_build_router_takes_only_what_the_spec_uses(openapi: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "v1.yaml"
    path.write_text(SPEC)
    server = openapi.render_api(path)["server.py"]
    assert "build_router(handlers: ApiHandlers, *, auth: BearerAuth, checks: CheckRules)" in server

    # Bearer authentication, no check rule called: no `checks`.
    path.write_text(scope(""))
    server = openapi.render_api(path)["server.py"]
    assert "def build_router(handlers: ApiHandlers, *, auth: BearerAuth) -> APIRouter:" in server
    assert "class CheckRules(abc.ABC):" in server  # declared, so still an interface
    assert "checks" not in server.split("def build_router")[1]
    assert "from ...anchor.auth.principal import BearerAuth, Principal\n" in server

    # Check rules but no authenticated operation: the interface, and a plain build_router.
    path.write_text(
        SPEC.replace("security:\n  - Bearer: []\n", "").replace(f"- Bearer: [{SCOPE}]", "[]")
    )
    files = openapi.render_api(path)
    assert "def build_router(handlers: ApiHandlers) -> APIRouter:" in files["server.py"]
    assert "async def get_org(self, *, org_id: int" in files["server.py"]
    assert "class CheckRules(abc.ABC):" in files["server.py"]
    assert "from ...anchor.auth.principal import Principal\n" in files["server.py"]
    assert "from .server import ApiHandlers, CheckRules, build_router" in files["__init__.py"]


# -- serving requests ---------------------------------------------------------------------------


@pytest.fixture
def served(secured_api: Any) -> tuple[Any, FakeAuth, list[tuple[Any, ...]]]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    calls: list[tuple[Any, ...]] = []
    handlers, rules = implementations(secured_api, calls)
    auth = fake_auth(secured_api)
    app = FastAPI()
    app.include_router(secured_api.build_router(handlers, auth=auth, checks=rules))
    return TestClient(app), auth, calls


def user(user_id: int) -> dict[str, str]:
    return {"Authorization": f"Bearer user-{user_id}"}


def test_authentication(served: tuple[Any, FakeAuth, list[tuple[Any, ...]]]) -> None:
    client, auth, calls = served
    # Each authenticated operation's dependency was made once, when the router was built.
    assert auth.required == ["getMe", "createProject", "getProject"]

    response = client.get("/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not calls
    # Authentication comes before parameter validation.
    assert client.get("/orgs/x/projects/p").status_code == 401

    assert client.get("/health").status_code == 204
    assert calls.pop() == ("health",)

    response = client.get("/me", headers=user(3))
    assert response.status_code == 200
    assert response.json() == {"userId": 3, "orgId": 5}
    name, principal = calls.pop()
    assert name == "get_me"
    assert principal == auth.runtime.Principal(user_id=3, org_id=5, session_id=9)
    assert auth.authenticated == ["getMe"]
    assert auth.required == ["getMe", "createProject", "getProject"]


def test_check_rules(served: tuple[Any, FakeAuth, list[tuple[Any, ...]]]) -> None:
    client, auth, calls = served

    response = client.get("/orgs/5/projects/web?includeArchived=true", headers=user(3))
    assert response.status_code == 200, response.text
    assert calls == [
        ("is_org_member", 3, 5, "member"),
        ("can_see_project", 5, "web", True),
        (
            "get_project",
            3,
            {"org_id": 5, "project": "web", "include_archived": True, "principal_": None},
        ),
    ]
    assert auth.authenticated == ["getProject"]
    calls.clear()

    # A rule that returns False: 403 naming the rule; later rules and the handler do not run.
    response = client.post("/orgs/5/projects", json={"name": "x"}, headers=user(3))
    assert response.status_code == 403
    assert response.json() == {"detail": "forbidden: IsOrgMember denied the request"}
    assert calls == [("is_org_member", 3, 5, "owner")]
    calls.clear()

    # Literal arguments: an int for a number, None for a nullable integer.
    response = client.post("/orgs/5/projects", json={"name": "x"}, headers=user(1))
    assert response.status_code == 201
    assert calls == [
        ("is_org_member", 1, 5, "owner"),
        ("within_quota", 5, "projects", 1, None),
        ("create_project", 1, 5, "x"),
    ]
    calls.clear()

    response = client.get("/orgs/5/projects/secret", headers=user(3))
    assert response.status_code == 403
    assert response.json()["detail"] == "forbidden: CanSeeProject denied the request"
    # A rule may raise an HTTPException of its own.
    response = client.get("/orgs/5/projects/missing", headers=user(3))
    assert response.status_code == 404
    assert response.json() == {"detail": "No such project"}
    assert client.get("/orgs/6/projects/web", headers=user(3)).status_code == 403
    assert not any(call[0] == "get_project" for call in calls)
    calls.clear()

    # Invalid parameters: 422 before any rule runs.
    assert client.get("/orgs/x/projects/web", headers=user(3)).status_code == 422
    assert not calls


def test_missing_rule_fails_at_class_creation(secured_api: Any) -> None:
    with pytest.raises(TypeError) as excinfo:

        class Rules(secured_api.CheckRules):  # type: ignore[misc,name-defined]
            async def is_org_member(self, principal: Any, org_id: int, role: str) -> bool:
                return True

            async def is_staff(self, principal: Any) -> bool:
                return True

    assert str(excinfo.value) == (
        "Rules does not implement check rules: "
        "CanSeeProject (can_see_project), WithinQuota (within_quota)"
    )


def test_build_router_rejects_what_is_not_check_rules(secured_api: Any) -> None:
    handlers, _ = implementations(secured_api, [])
    auth = fake_auth(secured_api)
    with pytest.raises(TypeError, match="build_router needs a CheckRules for checks, got object"):
        secured_api.build_router(handlers, auth=auth, checks=object())

    class Base(secured_api.CheckRules, abstract=True):  # type: ignore[misc,name-defined,call-arg]
        pass

    Base.__abstractmethods__ = frozenset()  # past ABC's check, not build_router's
    with pytest.raises(TypeError, match="does not implement check rules: IsOrgMember"):
        secured_api.build_router(handlers, auth=auth, checks=Base())


# -- static checks of the generated code ------------------------------------------------------

GOOD_IMPL = """\
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from ..anchor.auth.principal import Principal, Unauthorized
from .api import ApiHandlers, CheckRules, build_router, models


class Auth:
    def require(self, operation_id: str) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            raise Unauthorized()

        return dependency


class Handlers(ApiHandlers):
    async def health(self) -> None:
        pass

    async def get_me(self, principal: Principal) -> models.Me:
        return models.Me(user_id=principal.user_id, org_id=principal.org_id)

    async def create_project(
        self, principal: Principal, *, org_id: int, body: models.Project
    ) -> models.Project:
        return body

    async def get_project(
        self,
        principal: Principal,
        *,
        org_id: int,
        project: str,
        include_archived: bool = False,
        principal_: str | None = None,
    ) -> models.Project:
        raise HTTPException(status_code=404)


class Rules(CheckRules):
    async def is_org_member(self, principal: Principal, org_id: int, role: str) -> bool:
        return principal.org_id == org_id

    async def can_see_project(
        self, principal: Principal, org_id: int, project: str, include_archived: bool
    ) -> bool:
        return not include_archived

    async def within_quota(
        self, principal: Principal, org_id: int, resource: str, cost: float, limit: int | None
    ) -> bool:
        return cost <= (limit or 10)

    async def is_staff(self, principal: Principal) -> bool:
        return False


router = build_router(Handlers(), auth=Auth(), checks=Rules())
"""

BAD_IMPL = """\
from ..anchor.auth.principal import Principal
from .api import ApiHandlers, build_router, models


class Handlers(ApiHandlers):
    async def health(self) -> None:
        pass

    async def get_me(self) -> models.Me:
        return models.Me(user_id=1, org_id=1)

    async def create_project(
        self, principal: Principal, *, org_id: int, body: models.Project
    ) -> models.Project:
        return body

    async def get_project(
        self, principal: Principal, *, org_id: int, project: str, include_archived: bool = False
    ) -> models.Project:
        return models.Project(name=project)


router = build_router(Handlers())
"""


def test_secured_package_passes_mypy_strict_and_ruff(
    secured_files: dict[str, str], tmp_path: Path
) -> None:
    name = write_package(tmp_path, secured_files)
    (package_dir(tmp_path, name) / "impl.py").write_text(GOOD_IMPL)

    result = mypy_strict(tmp_path, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_ruff_passes(tmp_path, name)


def test_mypy_reports_handlers_without_the_principal(
    secured_files: dict[str, str], tmp_path: Path
) -> None:
    name = write_package(tmp_path, secured_files)
    (package_dir(tmp_path, name) / "impl.py").write_text(BAD_IMPL)

    result = mypy_strict(tmp_path, name)
    assert result.returncode == 1, result.stdout
    supertype = f'supertype "{name}.api.server.ApiHandlers"'
    assert f'Signature of "get_me" incompatible with {supertype}' in result.stdout
    assert f'Signature of "get_project" incompatible with {supertype}' in result.stdout
    assert 'Missing named argument "auth" for "build_router"' in result.stdout
    assert 'Missing named argument "checks" for "build_router"' in result.stdout


# -- bad input ----------------------------------------------------------------------------------

BAD_SPECS: dict[str, tuple[str, str, str]] = {
    # case: (spec, text the error contains, text of the line the error points at)
    "api key scheme": (
        SPEC.replace(f"- Bearer: [{SCOPE}]", "- Key: []"),
        (
            "security scheme 'Key' (type: apiKey), used by operation 'getOrg', is not supported: "
            "only HTTP bearer schemes (type: http, scheme: bearer) are"
        ),
        "    Key: {type: apiKey",
    ),
    "basic scheme": (
        SPEC.replace("{type: http, scheme: bearer}", "{type: http, scheme: basic}"),
        (
            "security scheme 'Bearer' (type: http, scheme: basic), used by operation 'getMe' "
            "(by the top-level `security`), is not supported"
        ),
        "    Bearer: {type: http",
    ),
    "unknown scheme": (
        SPEC.replace(f"- Bearer: [{SCOPE}]", "- Nope: []"),
        (
            "operation 'getOrg': unknown security scheme 'Nope' "
            "(components/securitySchemes defines: Bearer, Key)"
        ),
        "- Nope: []",
    ),
    "unknown scheme at the top": (
        SPEC.replace("  - Bearer: []", "  - Bearr: []"),
        "operation 'getMe' (by the top-level `security`): unknown security scheme 'Bearr'",
        "  - Bearr: []",
    ),
    "alternatives": (
        SPEC.replace(f"- Bearer: [{SCOPE}]", f"- Bearer: [{SCOPE}]\n        - Key: []"),
        "operation 'getOrg': alternative security requirements (2 of them) are not supported",
        "      security:",
    ),
    "optional authentication": (
        SPEC.replace(f"- Bearer: [{SCOPE}]", f"- Bearer: [{SCOPE}]\n        - {{}}"),
        "operation 'getOrg': optional authentication (the empty requirement {}) is not supported",
        "        - {}",
    ),
    "optional authentication at the top": (
        SPEC.replace("  - Bearer: []", "  - {}"),
        "operation 'getMe' (by the top-level `security`): optional authentication",
        "  - {}",
    ),
    "two schemes at once": (
        SPEC.replace(f"- Bearer: [{SCOPE}]", f"- {{Bearer: [{SCOPE}], Key: []}}"),
        "operation 'getOrg': requiring several security schemes at once (Bearer, Key)",
        "        - {Bearer",
    ),
    "security not a list": (
        SPEC.replace("security:\n  - Bearer: []", "security: {Bearer: []}"),
        "operation 'getMe' (by the top-level `security`): `security` must be a list",
        "security: {Bearer",
    ),
    "scopes not strings": (
        scope("3"),
        "operation 'getOrg': the scopes of Bearer must be a list of check rule calls",
        "        - Bearer: [3]",
    ),
    "not a call": (
        scope("orgId"),
        "operation 'getOrg': scope 'orgId' is not a check rule call like IsOrgMember(",
        "        - Bearer: [orgId]",
    ),
    "syntax error": (
        scope("'IsOrgMember(orgId,'"),
        "scope 'IsOrgMember(orgId,' is not a check rule call",
        "IsOrgMember(orgId,'",
    ),
    "method call": (
        scope("'rules.IsOrgMember(orgId)'"),
        "scope 'rules.IsOrgMember(orgId)' is not a check rule call",
        "rules.IsOrgMember",
    ),
    "unknown rule": (
        scope("'IsMember(orgId)'"),
        (
            "operation 'getOrg': scope 'IsMember(orgId)': unknown check rule 'IsMember' "
            "(x-check-rules defines: IsOrgMember, HasTag)"
        ),
        "IsMember(orgId)",
    ),
    "too few arguments": (
        scope("'IsOrgMember(orgId)'"),
        "IsOrgMember takes 2 argument(s) (orgId, role), got 1",
        "IsOrgMember(orgId)",
    ),
    "keyword argument": (
        scope("'IsOrgMember(orgId, role=\"member\")'"),
        "keyword arguments are not supported",
        "IsOrgMember(orgId, role=",
    ),
    "unknown parameter": (
        scope("'IsOrgMember(org, \"member\")'"),
        (
            "argument org (for orgId) is not a path or query parameter of the operation "
            "(it has: orgId, q)"
        ),
        "IsOrgMember(org,",
    ),
    "header parameter": (
        scope("'HasTag(trace)'"),
        "argument trace (for tag) is not a path or query parameter",
        "HasTag(trace)",
    ),
    "literal of the wrong type": (
        scope("'IsOrgMember(orgId, 5)'"),
        "argument 5 (for role) is not a valid str (one of 'member', 'owner')",
        "IsOrgMember(orgId, 5)",
    ),
    "literal not in the enum": (
        scope("'IsOrgMember(orgId, \"admin\")'"),
        "argument 'admin' (for role) is not a valid str (one of 'member', 'owner')",
        'IsOrgMember(orgId, "admin")',
    ),
    "bool for an integer": (
        scope("'IsOrgMember(True, \"member\")'"),
        "argument True (for orgId) is not a valid int",
        "IsOrgMember(True,",
    ),
    "parameter of the wrong type": (
        scope("'IsOrgMember(q, \"member\")'"),
        "argument q (for orgId): the parameter is str, the rule takes int",
        "IsOrgMember(q,",
    ),
    "optional parameter": (
        scope("'HasTag(q)'"),
        (
            "argument q (for tag): the parameter is optional without a default (None when absent), "
            "but the rule's tag is not nullable"
        ),
        "HasTag(q)",
    ),
    "attribute argument": (
        scope("'IsOrgMember(orgId.id, \"member\")'"),
        "argument orgId.id (for orgId): arguments must be parameter names or literals",
        "IsOrgMember(orgId.id",
    ),
    "nested call": (
        scope("'IsOrgMember(int(orgId), \"member\")'"),
        "argument int(orgId) (for orgId): arguments must be parameter names or literals",
        "IsOrgMember(int(orgId)",
    ),
    "operator": (
        scope("'IsOrgMember(-1, \"member\")'"),
        "argument -1 (for orgId): arguments must be parameter names or literals",
        "IsOrgMember(-1",
    ),
    "check rules not a mapping": (
        SPEC.replace("x-check-rules:\n", "x-check-rules: [IsOrgMember]\nx-unused:\n"),
        "`x-check-rules` must be a mapping of rule names",
        "x-check-rules: [",
    ),
    "rule name not an identifier": (
        SPEC.replace("  HasTag:", "  Has-Tag:"),
        "check rule 'Has-Tag': a rule name must be an identifier",
        "  Has-Tag:",
    ),
    "rule method names collide": (
        SPEC.replace("  HasTag:", "  isOrgMember:"),
        "check rules 'IsOrgMember' and 'isOrgMember' both become the method name is_org_member",
        "  isOrgMember:",
    ),
    "rule method name is a keyword": (
        SPEC.replace("  HasTag:", "  Pass:"),
        "check rule 'Pass' does not make a Python method name ('pass')",
        "  Pass:",
    ),
    "unknown rule key": (
        SPEC.replace("    description: Member of the org", "    descripton: Member of the org"),
        "check rule 'IsOrgMember': unknown key 'descripton' (expected: description, parameters)",
        "    descripton:",
    ),
    "missing parameters": (
        SPEC.replace(
            "    parameters:\n      - {name: tag, schema: {type: string}}\n",
            "    description: Has the tag\n",
        ),
        "check rule 'HasTag' needs `parameters`",
        "  HasTag:",
    ),
    "parameters not a list": (
        SPEC.replace("      - {name: tag, schema: {type: string}}", "      tag: {type: string}"),
        "check rule 'HasTag': `parameters` must be a list",
        "    parameters:\n      tag:",
    ),
    "parameter without a name": (
        SPEC.replace("{name: tag, schema: {type: string}}", "{schema: {type: string}}"),
        "check rule 'HasTag': a parameter needs a `name`",
        "      - {schema: {type: string}}",
    ),
    "parameter without a schema": (
        SPEC.replace("{name: tag, schema: {type: string}}", "{name: tag}"),
        "check rule 'HasTag': parameter 'tag' needs a `schema`",
        "      - {name: tag}",
    ),
    "parameter of an unsupported type": (
        SPEC.replace("{name: tag, schema: {type: string}}", "{name: tag, schema: {type: array}}"),
        (
            "check rule 'HasTag': parameter 'tag': unsupported schema; check rule parameters are "
            "strings, integers, numbers or booleans"
        ),
        "      - {name: tag, schema: {type: array",
    ),
    "enum value of the wrong type": (
        SPEC.replace("enum: [member, owner]", "enum: [member, 3]"),
        "check rule 'IsOrgMember': parameter 'role': enum value 3 is not a valid str",
        "enum: [member, 3]",
    ),
    "duplicate parameter": (
        SPEC.replace(
            "      - {name: tag, schema: {type: string}}",
            "      - {name: tag, schema: {type: string}}\n      - {name: tag, schema: {type: integer}}",
        ),
        "check rule 'HasTag': duplicate parameter names 'tag' and 'tag'",
        "      - {name: tag, schema: {type: integer}}",
    ),
    "parameters collide": (
        SPEC.replace(
            "      - {name: role, schema:",
            "      - {name: org_id, schema: {type: integer}}\n      - {name: role, schema:",
        ),
        (
            "check rule 'IsOrgMember': duplicate parameter names 'orgId' and 'org_id' "
            "(both become org_id)"
        ),
        "      - {name: org_id",
    ),
    "operation named after a build_router variable": (
        SPEC.replace("operationId: getMe", "operationId: checks"),
        (
            "operationId 'checks' (GET /me) becomes the method name checks, which build_router "
            "uses for a variable of its own; rename it"
        ),
        "    get:\n      operationId: checks",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_security_raises_gen_error_with_file_and_line(
    case: str, openapi: ModuleType, gen_error: type[Exception], tmp_path: Path
) -> None:
    spec, message, marker = BAD_SPECS[case]
    assert spec != SPEC, "the edit did not apply"
    path = tmp_path / "v1.yaml"
    path.write_text(spec)

    with pytest.raises(gen_error) as excinfo:
        openapi.render_api(path, display_path="api/v1.yaml")

    error = excinfo.value
    assert message in str(error)
    line = expected_line(spec, marker)
    assert str(error).startswith(f"api/v1.yaml:{line}: "), (str(error), line)


def test_the_base_spec_of_the_bad_ones_is_fine(openapi: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "v1.yaml"
    path.write_text(SPEC)
    assert "class CheckRules(abc.ABC):" in openapi.render_api(path)["server.py"]
