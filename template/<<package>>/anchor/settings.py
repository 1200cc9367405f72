"""Settings read from environment variables (and a `.env` file in development).

Subclass `Settings` in your app's `settings.py` to add your own; every field maps to an
upper-case environment variable of the same name (`database_url` <- `DATABASE_URL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
Environment = Literal["development", "production"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL. Unset: start the embedded PostgreSQL in EMBEDDED_PG_DIR.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    log_level: LogLevel = Field(default="info", description="Log level of the app and the server.")
    log_format: LogFormat = Field(
        default="text",
        description="`text` (one readable line per record) or `json` (one JSON object per line, "
        "for log collectors: set it in containers).",
    )
    request_observability: bool = Field(
        default=False,
        description="Request ids (in every log line of a request and the X-Request-ID header) "
        "and per-route request metrics at /metrics; costs about a tenth of peak req/s.",
    )
    db_pool_min_size: int = Field(default=2, ge=0, description="Connections kept open per process.")
    db_pool_max_size: int = Field(
        default=10, ge=1, description="Upper bound of connections per process."
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Apply pending migrations when the server starts (safe with many replicas).",
    )
    worker_enabled: bool = Field(
        default=True,
        description="Run the task worker inside the API process (`python -m <package> worker` "
        "runs one on its own).",
    )
    worker_concurrency: int = Field(default=10, ge=1, description="Tasks run at once per worker.")
    worker_queues: str = Field(default="default", description="Comma-separated queues to work.")
    worker_labels: str = Field(
        default="",
        description="Comma-separated labels of this worker: a task with labels runs only on "
        "workers that have all of them.",
    )
    worker_lease: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a running task stays claimed without a heartbeat: after a worker "
        "dies, its tasks run again elsewhere this long after its last heartbeat.",
    )
    worker_shutdown_grace: float = Field(
        default=10.0, ge=0, description="Seconds running tasks get to finish on shutdown."
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of `python -m <package> worker`'s Prometheus endpoint (0: none). "
        "The API serves its metrics at /metrics.",
    )
    task_retention_days: float = Field(
        default=7, gt=0, description="Finished tasks and their errors are deleted after this."
    )
    embedded_pg_dir: Path = Field(
        default=Path(".anchor/pgdata"),
        description="Data folder of the embedded PostgreSQL, used when DATABASE_URL is unset.",
    )
    environment: Environment | None = Field(
        default=None,
        description="`development` or `production`. Unset: development when DATABASE_URL is "
        "unset (the embedded PostgreSQL), production otherwise. Production refuses to start "
        "without a strong AUTH_SECRET.",
    )
    auth_secret: SecretStr | None = Field(
        default=None,
        description="Server secret that signs bearer tokens (at least 32 random characters, "
        "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`). Required outside "
        "development; in development one is generated and kept in `.anchor/auth-secret`. "
        "Changing it signs everyone out.",
    )
    auth_access_token_ttl: int = Field(
        default=15 * 60, gt=0, description="Seconds an access token is valid."
    )
    auth_refresh_token_ttl: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Seconds a refresh token (and its sign-in session) is valid; each refresh "
        "starts a new period.",
    )
    auth_revocation_delay: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a process may keep using what it read about a session: a sign-out "
        "or revocation made by another process takes effect here within this bound (at once in "
        "the process that made it). 0: every request reads the session from the database.",
    )

    @property
    def queues(self) -> list[str]:
        return _split(self.worker_queues)

    @property
    def labels(self) -> list[str]:
        return _split(self.worker_labels)

    def pool_size(self) -> int:
        """Connections per process: the app's, plus what an in-process worker needs."""
        worker = self.worker_concurrency + 3 if self.worker_enabled else 0
        return self.db_pool_max_size + worker


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class SettingsError(Exception):
    """Configuration from the environment is invalid; the message names each variable."""


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S]) -> S:
    """Build settings, turning pydantic's errors into one message that names the variables."""
    try:
        return cls()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"  {name}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid configuration:\n" + "\n".join(problems)) from None
