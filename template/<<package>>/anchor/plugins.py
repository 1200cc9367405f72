"""Plugins: routes, tasks, migrations, startup/shutdown steps and hooks, added to an app as one.

A plugin is an object with a `name` and any of the members of `Plugin`: subclassing it is a
convenience, not a requirement, so a plugin from another package need not import this
project's runtime. The app's composition root lists its plugins, and installed packages add
theirs through the `anchor.plugins` entry-point group (each entry point names a plugin object,
class or no-argument factory):

    [project.entry-points."anchor.plugins"]
    audit = "my_audit_plugin:AuditPlugin"

Everything a plugin contributes is checked before the app serves: a plugin name, route,
operationId or task name that is already taken stops the app with a `PluginError` naming both
owners.
"""

from __future__ import annotations

import importlib.metadata
import keyword
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from .auth.principal import BearerAuth
from .db import Connection, Database
from .settings import Settings
from .tasks import Enqueuer, FailedTask, TaskDefinition, TaskFailedHook

if TYPE_CHECKING:
    from .auth.hooks import AuthHooks

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "anchor.plugins"

# Plugin method -> the AuthHooks list it joins.
AUTH_HOOKS = {
    "on_user_created": "user_created",
    "on_org_created": "org_created",
    "on_token_created": "token_created",
    "on_signed_in": "signed_in",
    "on_sign_in_failed": "sign_in_failed",
}


class PluginError(Exception):
    """A plugin cannot be added: the message names the plugin and the problem."""


@dataclass(frozen=True)
class PluginContext:
    """What the app shares with its plugins: the same pool, settings, auth and task store."""

    settings: Settings
    db: Database
    tasks: Enqueuer
    auth: BearerAuth | None = None
    registry: CollectorRegistry | None = None


class Plugin:
    """Base class of plugins: override what yours contributes; everything is optional.

    Hooks are methods named like the hooks: `on_user_created(tx, user)`,
    `on_org_created(tx, org)` (both inside the creating transaction: raising aborts it),
    `on_token_created(user, org, caveats)` (returns caveats to add to the access token),
    `on_signed_in(user)`, `on_sign_in_failed(name, reason)`, and `on_task_failed(tx, failed)`
    (inside the transaction that records a task's final failure).
    """

    name: str = ""
    # Where the plugin's routes are served; default /api/plugins/<name>.
    route_prefix: str | None = None
    # The plugin's own migrations (golang-migrate names), tracked in their own table.
    migrations_dir: Path | None = None

    def setup(self, context: PluginContext) -> None:
        """Called once, first, when the app or a worker process is built."""

    def routes(self, context: PluginContext) -> APIRouter | None:
        return None

    def task_definitions(self, context: PluginContext) -> Mapping[str, TaskDefinition]:
        return {}

    async def startup(self, context: PluginContext) -> None:
        """Runs after the database is connected and migrated, before requests are served."""

    async def shutdown(self, context: PluginContext) -> None:
        """Runs before the database pool closes, in the reverse order of startup."""


def discover(group: str = ENTRY_POINT_GROUP) -> list[Any]:
    """The plugins installed packages declare in the entry-point `group`, loaded."""
    found = []
    for entry_point in sorted(importlib.metadata.entry_points(group=group), key=_ep_name):
        try:
            loaded = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"plugin entry point {entry_point.name!r} ({entry_point.value}) does not "
                f"load: {type(exc).__name__}: {exc}"
            ) from exc
        found.append(loaded() if callable(loaded) else loaded)
    return found


def _ep_name(entry_point: importlib.metadata.EntryPoint) -> str:
    return entry_point.name


class Plugins:
    """The app's plugins, checked (unique identifier names), and what they contribute.

    `setup(context)` comes first; the other methods use that context.
    """

    def __init__(self, plugins: Iterable[Any]) -> None:
        self.context: PluginContext | None = None
        self.items: list[Any] = []
        for plugin in plugins:
            name = getattr(plugin, "name", None)
            label = f"plugin {name!r} ({type(plugin).__module__}.{type(plugin).__qualname__})"
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise PluginError(f"{label}: `name` must be a Python identifier")
            if any(other.name == name for other in self.items):
                raise PluginError(f"{label}: another plugin is already named {name!r}")
            self.items.append(plugin)

    @classmethod
    def load(cls, plugins: Sequence[Any] = (), *, entry_points: bool = True) -> Plugins:
        """`plugins` from the composition root, then those of installed packages."""
        return cls([*plugins, *(discover() if entry_points else [])])

    def __iter__(self) -> Any:
        return iter(self.items)

    def setup(self, context: PluginContext) -> None:
        self.context = context
        for plugin in self._with("setup"):
            plugin.setup(context)

    def _context(self) -> PluginContext:
        if self.context is None:
            raise RuntimeError("Plugins.setup(context) must run first")
        return self.context

    def migration_sets(self) -> list[tuple[Path, str]]:
        """(folder, bookkeeping table) per plugin with migrations, applied after the app's."""
        sets = []
        for plugin in self.items:
            directory = getattr(plugin, "migrations_dir", None)
            if directory is not None:
                sets.append((Path(directory), f"anchor_plugin_{plugin.name.lower()}_migrations"))
        return sets

    def mount(self, app: FastAPI) -> None:
        """Serve each plugin's routes under its prefix, after the app's own routes."""
        context = self._context()
        owners = {key: "the app" for key in _route_keys(app.router.routes, "")}
        operation_ids = {
            r.operation_id: "the app" for r in app.router.routes if isinstance(r, APIRoute)
        }
        for plugin in self.items:
            routes = getattr(plugin, "routes", None)
            router = routes(context) if routes is not None else None
            if router is None:
                continue
            prefix = getattr(plugin, "route_prefix", None) or f"/api/plugins/{plugin.name}"
            owner = f"plugin {plugin.name!r}"
            for key in _route_keys(router.routes, prefix):
                if key in owners:
                    raise PluginError(f"{owner}: route {' '.join(key)} is taken by {owners[key]}")
                owners[key] = owner
            for route in router.routes:
                if isinstance(route, APIRoute) and route.operation_id:
                    if route.operation_id in operation_ids:
                        taken = operation_ids[route.operation_id]
                        raise PluginError(
                            f"{owner}: operationId {route.operation_id!r} is taken by {taken}"
                        )
                    operation_ids[route.operation_id] = owner
            app.include_router(router, prefix=prefix)

    def task_definitions(
        self, app_definitions: Mapping[str, TaskDefinition]
    ) -> dict[str, TaskDefinition]:
        """The app's task definitions and every plugin's, with no name defined twice."""
        context = self._context()
        merged = dict(app_definitions)
        owners = dict.fromkeys(app_definitions, "the app")
        for plugin in self.items:
            define = getattr(plugin, "task_definitions", None)
            for name, definition in (define(context) if define is not None else {}).items():
                if name in merged:
                    raise PluginError(
                        f"plugin {plugin.name!r}: task {name!r} is taken by {owners[name]}"
                    )
                merged[name], owners[name] = definition, f"plugin {plugin.name!r}"
        return merged

    def startup_steps(self) -> list[Callable[[], Awaitable[None]]]:
        return [_bound(plugin.startup, self._context()) for plugin in self._with("startup")]

    def shutdown_steps(self) -> list[Callable[[], Awaitable[None]]]:
        return [_bound(plugin.shutdown, self._context()) for plugin in self._with("shutdown")]

    def add_auth_hooks(self, hooks: AuthHooks) -> None:
        """Append each plugin's auth hook methods to `hooks`' lists."""
        for method, field_name in AUTH_HOOKS.items():
            for plugin in self._with(method):
                getattr(hooks, field_name).append(getattr(plugin, method))

    def task_failed_hooks(self) -> list[TaskFailedHook]:
        return [plugin.on_task_failed for plugin in self._with("on_task_failed")]

    def _with(self, member: str) -> list[Any]:
        return [plugin for plugin in self.items if callable(getattr(plugin, member, None))]


def _route_keys(routes: Iterable[Any], prefix: str) -> list[tuple[str, str]]:
    """(METHOD, path) of each API route, with `prefix` applied."""
    return [
        (method, prefix + route.path)
        for route in routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]


def _bound(
    step: Callable[[PluginContext], Awaitable[None]], context: PluginContext
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await step(context)

    return run


__all__ = [
    "ENTRY_POINT_GROUP",
    "Connection",
    "FailedTask",
    "Plugin",
    "PluginContext",
    "PluginError",
    "Plugins",
    "discover",
]
