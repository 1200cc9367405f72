"""The FastAPI application shell: lifespan (database, migrations), health and readiness probes.

Your composition root (`app.py`) builds the handlers and mounts the generated routers;
this module owns what every Anchor service does the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import pgembed
from .auth import schema as auth_schema
from .db import Database, retry_connect
from .migrations import APP_TABLE, Migrator
from .observability import HttpMetrics, ObservabilityMiddleware, register_pool_metrics
from .paths import MIGRATIONS_DIR
from .settings import Settings
from .tasks import schema as tasks_schema

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

# The framework's tables first (the task engine's, accounts'), then the app's (plugins' come
# after it), each set with its own bookkeeping table.
MIGRATION_SETS: tuple[tuple[Path, str], ...] = (
    (tasks_schema.MIGRATIONS_DIR, tasks_schema.MIGRATIONS_TABLE),
    (auth_schema.MIGRATIONS_DIR, auth_schema.MIGRATIONS_TABLE),
    (MIGRATIONS_DIR, APP_TABLE),
)


@dataclass
class Lifecycle:
    """Steps run after the database is ready (in order) and before it closes (in reverse)."""

    startup: list[Hook] = field(default_factory=list)
    shutdown: list[Hook] = field(default_factory=list)


def create_server(
    settings: Settings,
    *,
    db: Database,
    title: str,
    version: str,
    description: str = "",
    migration_sets: Sequence[tuple[Path, str]] = MIGRATION_SETS,
    lifecycle: Lifecycle | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """A FastAPI app whose lifespan connects `db`, migrates, and runs the lifecycle hooks.

    With REQUEST_OBSERVABILITY on, every HTTP request gets a request id (logged, echoed in
    `X-Request-ID`) and, given `registry`, per-route request metrics. With `registry`,
    `GET /metrics` serves it in Prometheus' text format, database pool gauges included.
    """
    lifecycle = lifecycle or Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = db.url or settings.database_url or await embedded_url(settings)
        if settings.migrate_on_start:
            await migrate_all(url, migration_sets)
        await db.connect(url)
        try:
            for hook in lifecycle.startup:
                await hook()
            yield
        finally:
            for hook in reversed(lifecycle.shutdown):
                await hook()
            await db.close()

    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: the database answers."""
        if await db.ping():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "reason": "database"}, status_code=503)

    # observability: request ids and request metrics when REQUEST_OBSERVABILITY is on (it costs
    # about a tenth of peak requests per second, see BENCHMARKS.md); pool gauges with a registry
    if settings.request_observability:
        http_metrics = HttpMetrics(registry) if registry is not None else None
        app.add_middleware(ObservabilityMiddleware, metrics=http_metrics)
    if registry is not None:
        register_pool_metrics(registry, db)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            """Prometheus metrics of this process."""
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def include_routes(app: FastAPI, router: APIRouter) -> None:
    """Serve `router`'s routes from the app's own route table.

    FastAPI keeps a router given to `app.include_router` as a nested router that is matched
    on every request before its routes are; flat routes serve about 20% more requests per
    second on this machine (see BENCHMARKS.md). The routes, their OpenAPI entries and
    `app.dependency_overrides` work the same.
    """
    app.router.routes.extend(router.routes)


async def embedded_url(settings: Settings) -> str:
    """Start (or join) the embedded PostgreSQL from async code; return its URL."""
    from .paths import PACKAGE_DIR

    return await asyncio.to_thread(pgembed.start, settings.embedded_pg_dir, PACKAGE_DIR.name)


async def migrate_all(
    url: str, migration_sets: Sequence[tuple[Path, str]] = MIGRATION_SETS
) -> None:
    """Apply every pending migration of each set, in order (safe from many processes at once)."""
    conn = await retry_connect(lambda: asyncpg.connect(url))
    try:
        for directory, table in migration_sets:
            applied = await Migrator(directory, table=table).up(conn)
            if applied:
                log.info("applied %d migration(s) from %s", len(applied), directory)
    finally:
        await conn.close()
