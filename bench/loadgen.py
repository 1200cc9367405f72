"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight each.

Written on asyncio protocols (and uvloop when present) so that one core drives a Python server
on the other; the benchmark reports both servers measured by the same client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0


class _Connection(asyncio.Protocol):
    def __init__(
        self, request: bytes, result: LoadResult, deadline: float, done: asyncio.Future[None]
    ):
        self.request, self.result, self.deadline, self.done = request, result, deadline, done
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses (0.23), so no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            status = head[9:12]
            self.buffer = self.buffer[total:]
            now = time.perf_counter()
            if status == b"200":
                self.result.requests += 1
                self.result.latencies.append(now - self.sent_at)
            else:
                self.result.errors += 1
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_load(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    connections: int = 32,
    seconds: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send `method path` (with extra `headers`, e.g. Authorization) for `seconds` on
    `connections` connections; only 200 responses count as requests, anything else as errors."""
    loop = asyncio.get_running_loop()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    waiters = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda d=done: _Connection(request, result, deadline, d), host, port
        )
        waiters.append(done)
    await asyncio.wait_for(asyncio.gather(*waiters), seconds + 30)  # a stalled server: fail
    result.seconds = time.perf_counter() - started
    return result


def measure(host: str, port: int, path: str, **kwargs: object) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(run_load(host, port, path, **kwargs))  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(run_load(host, port, path, **kwargs))  # type: ignore[arg-type]
