"""`python -m <package> worker`: a process that only runs tasks, until SIGTERM or Ctrl-C.

Run as many as you like next to the API replicas (start those with WORKER_ENABLED=false to
keep task work out of request latency). On SIGTERM the worker stops claiming, gives running
tasks WORKER_SHUTDOWN_GRACE seconds, and hands the rest back at once.
"""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from .observability import register_pool_metrics
from .server import embedded_url, migrate_all
from .tasks.runtime import TaskRuntime


async def run_worker(runtime: TaskRuntime) -> None:
    settings, db = runtime.settings, runtime.db
    url = db.url or settings.database_url or await embedded_url(settings)
    if settings.migrate_on_start:
        await migrate_all(url)
    await db.connect(url)
    if settings.worker_metrics_port and runtime.metrics is not None:
        register_pool_metrics(runtime.metrics.registry, db)
        start_http_server(settings.worker_metrics_port, registry=runtime.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runtime.start()
        await stop.wait()
    finally:
        await runtime.stop()
        await db.close()
