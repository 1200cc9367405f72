"""Request ids, HTTP request metrics and database pool gauges.

`ObservabilityMiddleware` is a plain ASGI middleware (no per-request task or body buffering):
for each HTTP request it takes the `X-Request-ID` header when it is a sane token (else makes
one), puts it in the logging context (see `logs`) and echoes it in the response, and, given
`HttpMetrics`, counts the request and times it under the route template
(`/api/v1/items/{itemId}`, `<unmatched>` when no route matched), never the raw path.
`PoolCollector` reports the asyncpg pool's size when Prometheus scrapes (no queries).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import logs

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .db import Database

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED = "<unmatched>"
# Letters, digits and `-_.:` (UUIDs, ULIDs, trace ids): nothing that could forge a log line.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def new_request_id() -> str:
    """32 hex digits; unique enough to find a request's lines (not a secret: no syscall)."""
    return f"{random.getrandbits(128):032x}"


class HttpMetrics:
    """`http_requests_total{method,route,status}` and `http_request_duration_seconds
    {method,route}` in `registry`. Label children are cached: recording is two dict lookups."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests_total = Counter(
            "http_requests_total",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from receiving an HTTP request until its response was sent.",
            ["method", "route"],
            registry=registry,
        )
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self.requests_total.labels(
                method, route, str(status)
            )
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[(method, route)] = self.duration.labels(method, route)
        counter.inc()
        histogram.observe(seconds)


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that handled `scope` (after the app ran), with the prefix of
    any mount it went through; `<unmatched>` when none did. `root_path`: the one on entry."""
    path: str | None = None
    route = scope.get("route")
    fastapi_scope = scope.get("fastapi")
    # FastAPI's included routers record the full template (prefixes included) here.
    effective = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    original = getattr(effective, "original_route", None)
    if effective is not None and (route is None or original is route):
        path = getattr(effective, "path_format", None)
    if path is None and route is not None:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path is None and "endpoint" in scope:  # a plain Starlette route (e.g. /docs)
        path = _endpoint_path(scope)
    if path is None:
        return UNMATCHED
    mounted = scope.get("root_path", "")
    return mounted[len(root_path) :] + path if len(mounted) > len(root_path) else path


def _endpoint_path(scope: Scope) -> str | None:
    router = scope.get("router")
    for route in getattr(router, "routes", ()):
        if getattr(route, "endpoint", None) is scope["endpoint"]:
            path = getattr(route, "path_format", None)
            return path if isinstance(path, str) else None
    return None


class ObservabilityMiddleware:
    """Request id (logging context and `X-Request-ID` response header) and, with `metrics`,
    request metrics. Pure ASGI: wraps `send` only to read the status and add the header."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id: str | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _SANE_REQUEST_ID.fullmatch(value):
                    request_id = value.decode("ascii")
                break
        if request_id is None:
            request_id = new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        root_path = scope.get("root_path", "")
        token = logs.push_context(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Keep the request id in this (per-request) task's context: the server logs the
            # traceback after we return.
            self._record(scope, root_path, status, started)
            raise
        self._record(scope, root_path, status, started)
        logs.pop_context(token)

    def _record(self, scope: Scope, root_path: str, status: int, started: float) -> None:
        if self.metrics is not None:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope, root_path)
            self.metrics.observe(method, route, status, time.perf_counter() - started)


class PoolCollector(Collector):
    """`db_pool_size`, `db_pool_idle` and `db_pool_max` of a `Database`, read from the
    asyncpg pool at scrape time (nothing while it is not connected)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        stats = self.db.pool_stats()
        if stats is None:
            return []
        return list(self._families(*stats))

    def _families(self, size: int = 0, idle: int = 0, maximum: int = 0) -> Iterator[Metric]:
        for name, doc, value in (
            ("db_pool_size", "Connections the database pool holds open.", size),
            ("db_pool_idle", "Open connections of the pool not in use.", idle),
            ("db_pool_max", "Most connections the pool may open.", maximum),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


def register_pool_metrics(registry: CollectorRegistry, db: Database) -> None:
    """Report `db`'s pool gauges in `registry` (once per registry)."""
    registry.register(PoolCollector(db))
