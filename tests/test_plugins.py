"""The plugin mechanism (anchor.plugins): checks, mounting, task merging and entry points.

The example plugin (plugins/audit) is tested end to end in the generated project's own tests.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def plugins(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.plugins")


@pytest.fixture(scope="module")
def tasks(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks")


def context(plugins: ModuleType) -> Any:
    return plugins.PluginContext(settings=None, db=None, tasks=None)


def router(*paths: str, operation_prefix: str = "") -> APIRouter:
    routes = APIRouter()
    for path in paths:
        operation_id = operation_prefix + path.strip("/").replace("/", "_")

        async def endpoint(path: str = path) -> dict[str, str]:
            return {"served": path}

        routes.add_api_route(path, endpoint, methods=["GET"], operation_id=operation_id)
    return routes


class RoutesPlugin:
    """A plugin that does not subclass Plugin: duck typing is enough."""

    def __init__(self, name: str, routes: APIRouter, prefix: str | None = None) -> None:
        self.name = name
        self.route_prefix = prefix
        self._routes = routes

    def routes(self, context: Any) -> APIRouter:
        return self._routes


def app_with(plugins: ModuleType, *items: Any) -> FastAPI:
    app = FastAPI()
    app.router.routes.extend(router("/api/v1/things").routes)
    extensions = plugins.Plugins(items)
    extensions.setup(context(plugins))
    extensions.mount(app)
    return app


def test_plugin_routes_are_served_under_their_prefix(plugins: ModuleType) -> None:
    app = app_with(
        plugins,
        RoutesPlugin("reports", router("/daily")),
        RoutesPlugin("legacy", router("/old"), prefix="/legacy"),
    )
    client = TestClient(app)
    assert client.get("/api/plugins/reports/daily").json() == {"served": "/daily"}
    assert client.get("/legacy/old").json() == {"served": "/old"}
    assert client.get("/api/v1/things").json() == {"served": "/api/v1/things"}


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            lambda: RoutesPlugin("clash", router("/things", operation_prefix="x"), "/api/v1"),
            "plugin 'clash': route GET /api/v1/things is taken by the app",
        ),
        (
            lambda: RoutesPlugin("clash", router("/daily", operation_prefix="x"), "/api/plugins/a"),
            "plugin 'clash': route GET /api/plugins/a/daily is taken by plugin 'a'",
        ),
        (
            lambda: RoutesPlugin("clash", router("/api/v1/things")),
            "plugin 'clash': operationId 'api_v1_things' is taken by the app",
        ),
    ],
)
def test_a_route_or_operation_id_claimed_twice_fails_naming_both(
    plugins: ModuleType, second: Any, message: str
) -> None:
    with pytest.raises(plugins.PluginError) as raised:
        app_with(plugins, RoutesPlugin("a", router("/daily", operation_prefix="a")), second())
    assert str(raised.value) == message


def test_plugin_names_are_unique_identifiers(plugins: ModuleType) -> None:
    with pytest.raises(plugins.PluginError, match="another plugin is already named 'a'"):
        plugins.Plugins([RoutesPlugin("a", router()), RoutesPlugin("a", router())])
    for bad in ["", "has-dash", "class", None]:
        with pytest.raises(plugins.PluginError, match="must be a Python identifier"):
            plugins.Plugins([RoutesPlugin(bad, router())])


def test_plugin_tasks_join_the_apps_and_names_stay_unique(
    plugins: ModuleType, tasks: ModuleType
) -> None:
    async def execute(ctx: Any, tx: Any, params: Any) -> None:
        return None

    def definition(name: str) -> Any:
        return tasks.TaskDefinition(name, tasks.TaskOptions(), execute)

    class TaskPlugin(plugins.Plugin):
        def __init__(self, name: str, *task_names: str) -> None:
            self.name = name
            self.task_names = task_names

        def task_definitions(self, context: Any) -> dict[str, Any]:
            return {name: definition(name) for name in self.task_names}

    app_tasks = {"sendEmail": definition("sendEmail")}
    extensions = plugins.Plugins([TaskPlugin("billing", "chargeCard"), TaskPlugin("noop")])
    extensions.setup(context(plugins))
    assert sorted(extensions.task_definitions(app_tasks)) == ["chargeCard", "sendEmail"]

    clashing = plugins.Plugins([TaskPlugin("mail", "sendEmail")])
    clashing.setup(context(plugins))
    with pytest.raises(
        plugins.PluginError, match="plugin 'mail': task 'sendEmail' is taken by the app"
    ):
        clashing.task_definitions(app_tasks)


def test_hooks_migrations_and_lifecycle_steps_are_collected(plugins: ModuleType) -> None:
    calls: list[str] = []

    class Everything(plugins.Plugin):
        name = "everything"
        migrations_dir = Path("/somewhere/migrations")

        async def startup(self, context: Any) -> None:
            calls.append("startup")

        async def on_signed_in(self, user: Any, org: Any, session_id: int) -> None:
            calls.append("signed_in")

        async def on_task_failed(self, tx: Any, failed: Any) -> None:
            calls.append("task_failed")

    class Nothing(plugins.Plugin):
        name = "nothing"

    auth_hooks = importlib.import_module(plugins.__name__.rsplit(".", 1)[0] + ".auth.hooks")
    extensions = plugins.Plugins([Nothing(), Everything()])
    extensions.setup(context(plugins))
    assert extensions.migration_sets() == [
        (Path("/somewhere/migrations"), "anchor_plugin_everything_migrations")
    ]
    hooks = auth_hooks.AuthHooks()
    extensions.add_auth_hooks(hooks)
    assert len(hooks.signed_in) == 1 and not hooks.user_created
    assert len(extensions.task_failed_hooks()) == 1
    assert len(extensions.startup_steps()) == 2  # the base class's no-op steps count too


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path where tests 'install' distributions with entry points."""
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("acme_")]:
            del sys.modules[name]


def install(site: Path, dist: str, module_source: str, entry_point: str) -> None:
    module = dist.replace("-", "_")
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[anchor.plugins]\n{entry_point}\n")
    importlib.invalidate_caches()


def test_installed_packages_contribute_plugins_through_entry_points(
    plugins: ModuleType, installed: Path
) -> None:
    install(
        installed,
        "acme-status",
        """
        from fastapi import APIRouter

        class StatusPlugin:
            name = "status"

            def routes(self, context):
                router = APIRouter()

                @router.get("/ping", operation_id="acmePing")
                async def ping() -> dict[str, str]:
                    return {"pong": "acme"}

                return router
        """,
        "status = acme_status:StatusPlugin",
    )
    extensions = plugins.Plugins.load([RoutesPlugin("local", router("/x"))])
    assert [p.name for p in extensions] == ["local", "status"]
    app = FastAPI()
    extensions.setup(context(plugins))
    extensions.mount(app)
    assert TestClient(app).get("/api/plugins/status/ping").json() == {"pong": "acme"}
    assert [p.name for p in plugins.Plugins.load([], entry_points=False)] == []


def test_a_broken_entry_point_names_itself(plugins: ModuleType, installed: Path) -> None:
    install(
        installed,
        "acme-broken",
        "raise ImportError('no module named zork')\n",
        "broken = acme_broken:Plugin",
    )
    with pytest.raises(plugins.PluginError) as raised:
        plugins.Plugins.load([])
    assert "plugin entry point 'broken' (acme_broken:Plugin) does not load" in str(raised.value)
    assert "no module named zork" in str(raised.value)
