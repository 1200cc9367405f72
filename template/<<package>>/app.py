"""Composition root: build each piece once and hand it to the code that needs it.

No globals: `create_app(settings)` and `create_worker(settings)` build everything from the
settings, and tests build their own (or swap a piece: see tests/). `python -m <package> serve`
calls `create_app()`, `python -m <package> worker` calls `create_worker()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from .anchor.db import Database
from .anchor.server import Lifecycle, create_server, include_routes
from .anchor.settings import load_settings
from .anchor.tasks import TaskMetrics, TaskStore
from .anchor.tasks.runtime import TaskRuntime
from .gen.api import build_router
from .gen.db import Queries, register_codecs
from .gen.tasks import TaskRunner, task_definitions
from .handlers import Handlers
from .settings import AppSettings
from .tasks import Executors


@dataclass(frozen=True)
class Services:
    """What handlers and task executors are built from."""

    settings: AppSettings
    db: Database
    queries: Queries
    tasks: TaskRunner  # enqueue tasks: `await services.tasks.run_<task>(params, tx=...)`
    metrics: TaskMetrics  # in this app's own Prometheus registry, served at /metrics


def build_services(settings: AppSettings) -> Services:
    db = Database(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.pool_size(),
        init=register_codecs,  # json/jsonb as Python values on every connection
    )
    metrics = TaskMetrics(CollectorRegistry())
    store = TaskStore(db, metrics=metrics)
    return Services(
        settings=settings, db=db, queries=Queries(db), tasks=TaskRunner(store), metrics=metrics
    )


def build_task_runtime(services: Services) -> TaskRuntime:
    executors = Executors(queries=services.queries)
    definitions = task_definitions(executors)
    return TaskRuntime(services.db, definitions, services.settings, metrics=services.metrics)


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or load_settings(AppSettings)
    services = build_services(settings)
    lifecycle = Lifecycle()
    if settings.worker_enabled:
        runtime = build_task_runtime(services)
        lifecycle.startup.append(runtime.start)
        lifecycle.shutdown.append(runtime.stop)
    app = create_server(
        settings,
        db=services.db,
        title=settings.app_title,
        version="1.0.0",
        lifecycle=lifecycle,
        registry=services.metrics.registry,
    )
    handlers = Handlers(db=services.db, queries=services.queries, tasks=services.tasks)
    include_routes(app, build_router(handlers))
    return app


def create_worker(settings: AppSettings | None = None) -> TaskRuntime:
    settings = settings or load_settings(AppSettings)
    # A worker process always runs the worker (and sizes its pool for it), whatever
    # WORKER_ENABLED says for the API processes sharing its configuration.
    settings = settings.model_copy(update={"worker_enabled": True})
    return build_task_runtime(build_services(settings))
