"""Observability of the runtime: JSON/text log lines with request and task context, secrets kept
out of logs, request ids, HTTP request metrics by route template, and database pool gauges."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from .task_helpers import setup_pool

LOGGER = "anchor_test.observability"


@pytest.fixture
def logs(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.logs")


@pytest.fixture
def obs(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.observability")


class Capture(logging.Handler):
    """Formats records as the configured handler does and keeps the parsed JSON lines."""

    def __init__(self, logs: ModuleType) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(logs.ContextFilter())
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.raw.append(text)
        self.lines.append(json.loads(text))

    def messages(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["message"] == message]


@pytest.fixture
def captured(logs: ModuleType) -> Iterator[Capture]:
    handler = Capture(logs)
    logger = logging.getLogger(LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# Formatters


def test_json_lines_have_time_level_logger_message_context_and_exception(
    logs: ModuleType, captured: Capture
) -> None:
    log = logging.getLogger(LOGGER)
    with logs.bind(request_id="r-1"):
        log.info("hello %s", "world", extra={"user_id": 7})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.warning("outside")

    hello, failed, outside = captured.lines
    assert set(hello) == {"time", "level", "logger", "message", "request_id", "user_id"}
    assert (hello["level"], hello["logger"], hello["message"]) == ("info", LOGGER, "hello world")
    assert (hello["request_id"], hello["user_id"]) == ("r-1", 7)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", hello["time"])
    assert failed["level"] == "error" and failed["request_id"] == "r-1"
    assert "Traceback" in failed["exception"] and "ValueError: boom" in failed["exception"]
    assert "request_id" not in outside and "exception" not in outside
    assert all("\n" not in raw for raw in captured.raw)  # one line per record


def test_text_lines_carry_the_context(logs: ModuleType) -> None:
    record = logging.LogRecord(LOGGER, logging.INFO, __file__, 1, "working on %d", (3,), None)
    with logs.bind(task_id=3, task="send_email", attempt=1):
        logs.ContextFilter().filter(record)
    line = logs.TextFormatter().format(record)
    assert re.fullmatch(
        rf"\S+Z INFO {LOGGER}: working on 3 \[task_id=3 task=send_email attempt=1\]", line
    )


def test_secrets_are_masked(logs: ModuleType, captured: Capture) -> None:
    log = logging.getLogger(LOGGER)
    log.info("connecting to postgresql://app:s3cr3t@db:5432/app?sslmode=require")
    log.info("dsn: host=db user=app password=hunter2 dbname=app")
    try:
        raise OSError("cannot reach postgres://app:s3cr3t@db/app (token=abc123)")
    except OSError:
        log.exception("connect failed")
    text = "\n".join(captured.raw)
    for secret in ("s3cr3t", "hunter2", "abc123"):
        assert secret not in text
    assert captured.lines[0]["message"] == (
        "connecting to postgresql://app:***@db:5432/app?sslmode=require"
    )
    assert "user=app password=*** dbname=app" in captured.lines[1]["message"]
    assert "postgres://app:***@db/app (token=***" in captured.lines[2]["exception"]


def test_access_log_masks_query_values_and_carries_the_request_id(logs: ModuleType) -> None:
    # The record uvicorn's access logger makes: '%s - "%s %s HTTP/%s" %d'
    args = ("127.0.0.1:5000", "GET", "/api/v1/items?token=abc&page=2", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    with logs.bind(request_id="r-9"):
        logs.ContextFilter().filter(record)
    line = json.loads(logs.JsonFormatter().format(record))
    assert "abc" not in json.dumps(line)
    assert line["message"] == '127.0.0.1:5000 - "GET /api/v1/items?token=***&page=*** HTTP/1.1" 200'
    assert (line["request_id"], line["method"], line["status"]) == ("r-9", "GET", 200)


def test_logging_config_routes_uvicorn_loggers_to_the_root_handler(
    logs: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved_loggers = {
        n: (logging.getLogger(n).level, logging.getLogger(n).handlers[:]) for n in names
    }
    try:
        logs.configure_logging("info", "json")
        with logs.bind(request_id="r-2"):
            logging.getLogger("uvicorn.error").info("started")
            logging.getLogger("anchor_test.quiet").debug("below LOG_LEVEL")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert lines == [
            {**lines[0], "logger": "uvicorn.error", "message": "started", "request_id": "r-2"}
        ]
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        for name, (level, handlers) in saved_loggers.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).handlers[:] = handlers


# Request ids and request metrics


def make_app(obs: ModuleType, registry: CollectorRegistry) -> Any:
    from fastapi import APIRouter, FastAPI

    app = FastAPI()
    router = APIRouter(prefix="/api/v1")
    log = logging.getLogger(LOGGER)

    @router.get("/items/{itemId}")
    async def get_item(itemId: int) -> dict[str, int]:
        log.info("handling item")
        return {"id": itemId}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.include_router(router)
    app.add_middleware(obs.ObservabilityMiddleware, metrics=obs.HttpMetrics(registry))
    return app


def test_request_id_is_logged_and_echoed(obs: ModuleType, captured: Capture) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(make_app(obs, CollectorRegistry()))
    generated = client.get("/api/v1/items/1")
    request_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert captured.messages("handling item")[-1]["request_id"] == request_id

    supplied = client.get("/api/v1/items/2", headers={"X-Request-ID": "trace-7f3a:01.b_c"})
    assert supplied.headers["x-request-id"] == "trace-7f3a:01.b_c"
    assert captured.messages("handling item")[-1]["request_id"] == "trace-7f3a:01.b_c"

    for invalid in ("has space", "x" * 129, 'quote"', ""):
        replaced = client.get("/api/v1/items/3", headers={"X-Request-ID": invalid})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
        request_id = replaced.headers["x-request-id"]
        assert captured.messages("handling item")[-1]["request_id"] == request_id
    assert len({line["request_id"] for line in captured.messages("handling item")}) == 6
    logging.getLogger(LOGGER).info("after")
    assert "request_id" not in captured.messages("after")[0]


def test_request_metrics_use_the_route_template(obs: ModuleType) -> None:
    from fastapi.testclient import TestClient

    registry = CollectorRegistry()
    client = TestClient(make_app(obs, registry), raise_server_exceptions=False)
    for path in ("/api/v1/items/1", "/api/v1/items/2", "/api/v1/items/x", "/nope", "/nope/2"):
        client.get(path)
    assert client.post("/api/v1/items/1").status_code == 405
    assert client.get("/api/v1/boom").status_code == 500
    client.request("BREW", "/api/v1/items/1")

    def count(method: str, route: str, status: str) -> float | None:
        labels = {"method": method, "route": route, "status": status}
        return registry.get_sample_value("http_requests_total", labels)

    item = "/api/v1/items/{itemId}"
    assert count("GET", item, "200") == 2
    assert count("GET", item, "422") == 1
    assert count("GET", "<unmatched>", "404") == 2
    assert count("POST", item, "405") == 1
    assert count("GET", "/api/v1/boom", "500") == 1
    assert count("OTHER", item, "405") == 1
    labels = {"method": "GET", "route": item}
    assert registry.get_sample_value("http_request_duration_seconds_count", labels) == 3
    exposition = generate_latest(registry).decode()
    assert "/api/v1/items/1" not in exposition and "/nope" not in exposition


# Pool gauges


def test_pool_gauges_are_read_at_scrape_time(
    template_package: str, obs: ModuleType, database_url: str
) -> None:
    db_module = importlib.import_module(f"{template_package}.anchor.db")
    registry = CollectorRegistry()
    db = db_module.Database(database_url, min_size=2, max_size=5)
    obs.register_pool_metrics(registry, db)
    assert registry.get_sample_value("db_pool_size") is None  # not connected: nothing

    async def run() -> None:
        await db.connect()
        try:
            assert registry.get_sample_value("db_pool_max") == 5
            assert registry.get_sample_value("db_pool_size") == 2
            assert registry.get_sample_value("db_pool_idle") == 2
            async with db.connection():
                assert registry.get_sample_value("db_pool_idle") == 1
        finally:
            await db.close()

    asyncio.run(run())
    with pytest.raises(ValueError, match="Duplicated"):
        obs.register_pool_metrics(registry, db)


def test_create_server_wires_request_ids_metrics_and_pool_gauges(
    template_package: str, database_url: str, captured: Capture
) -> None:
    pytest.importorskip("pydantic_settings")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    server = importlib.import_module(f"{template_package}.anchor.server")
    settings_module = importlib.import_module(f"{template_package}.anchor.settings")
    db_module = importlib.import_module(f"{template_package}.anchor.db")
    settings = settings_module.Settings(
        database_url=database_url, migrate_on_start=False, request_observability=True
    )
    registry = CollectorRegistry()
    db = db_module.Database(database_url, min_size=1, max_size=3)
    app: FastAPI = server.create_server(settings, db=db, title="t", version="1", registry=registry)

    @app.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        logging.getLogger(LOGGER).info("hello")
        return {"hello": name}

    with TestClient(app) as client:
        response = client.get("/hello/you", headers={"X-Request-ID": "req-1"})
        assert response.headers["x-request-id"] == "req-1"
        assert captured.messages("hello")[0]["request_id"] == "req-1"
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/hello/{name}",status="200"} 1.0' in metrics
    assert 'http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
    assert "db_pool_max 3.0" in metrics and "db_pool_size " in metrics


# Task context


def test_task_id_is_on_every_line_logged_during_an_attempt(
    tasks: ModuleType, database_url: str, captured: Capture
) -> None:
    log = logging.getLogger(LOGGER)

    async def work(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        log.info("working")
        await asyncio.sleep(0)
        log.info("still working")
        if params.get("fail"):
            raise RuntimeError("no")

    async def run() -> tuple[int, int]:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        once = tasks.TaskOptions(retry_policy=tasks.RetryPolicy(intervals=(), max_attempts=1))
        definition = tasks.TaskDefinition("work", once, work)
        worker = tasks.Worker(
            pool, {"work": definition}, poll_interval=0.05, lease=dt.timedelta(seconds=5)
        )
        await worker.start()
        try:
            first = await store.enqueue("work", {}, tasks.TaskOptions())
            second = await store.enqueue("work", {"fail": True}, once)
            await store.wait(first, timeout=5)
            with pytest.raises(tasks.TaskFailed):
                await store.wait(second, timeout=5)
        finally:
            await worker.stop(2.0)
            await pool.close()
        log.info("done")
        return first, second

    first, second = asyncio.run(run())
    lines = captured.messages("working") + captured.messages("still working")
    assert len(lines) == 4
    assert {(line["task_id"], line["task"], line["attempt"]) for line in lines} == {
        (first, "work", 1),
        (second, "work", 1),
    }
    assert "task_id" not in captured.messages("done")[0]
