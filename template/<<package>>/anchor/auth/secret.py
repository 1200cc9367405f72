"""The server secret that signs tokens: required and strong in production, generated in development.

Development means ENVIRONMENT=development, or ENVIRONMENT unset and DATABASE_URL unset (the
embedded PostgreSQL). There a missing AUTH_SECRET is generated once and kept, readable by its
owner only, next to the embedded data folder (`.anchor/auth-secret`), so tokens survive
restarts. Everywhere else a missing or weak secret stops the process at startup with a
`SettingsError` naming AUTH_SECRET; the value itself is never printed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..paths import PROJECT_ROOT
from ..settings import Settings, SettingsError

MIN_LENGTH = 32
MIN_DISTINCT = 8
SECRET_FILE_NAME = "auth-secret"
# Words of values pasted from examples; looked for with case and punctuation removed.
_PLACEHOLDERS = ("changeme", "replaceme", "yoursecret", "placeholder", "example")
_FILLERS = ("secret", "password", "token", "key", "auth")


def is_development(settings: Settings) -> bool:
    """ENVIRONMENT=development, or ENVIRONMENT unset and no DATABASE_URL (embedded PostgreSQL)."""
    if settings.environment is not None:
        return settings.environment == "development"
    return settings.database_url is None


def weakness(secret: str) -> str | None:
    """Why `secret` is too weak to sign tokens, or None when it is acceptable."""
    if len(secret) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    if len(set(secret)) < MIN_DISTINCT:
        return f"fewer than {MIN_DISTINCT} distinct characters"
    folded = "".join(c for c in secret.lower() if c.isalnum())
    if any(word in folded for word in _PLACEHOLDERS):
        return "a placeholder value"
    for word in _FILLERS:
        folded = folded.replace(word, "")
    if len(set(folded)) < MIN_DISTINCT:  # "secret-secret-secret-...", "my-password-1"
        return "a placeholder value"
    return None


def secret_file(settings: Settings) -> Path:
    """Where development keeps its generated secret: beside the embedded data folder."""
    folder = settings.embedded_pg_dir.expanduser()
    if not folder.is_absolute():
        folder = PROJECT_ROOT / folder
    return folder.parent / SECRET_FILE_NAME


def resolve_secret(settings: Settings) -> bytes:
    """The signing secret for `settings`, or `SettingsError` (see the module docstring)."""
    configured = settings.auth_secret.get_secret_value() if settings.auth_secret else ""
    if is_development(settings):
        return configured.encode() if configured else load_or_create(secret_file(settings))
    if not configured:
        raise SettingsError(
            "invalid configuration:\n  AUTH_SECRET: required outside development (set it to at "
            f"least {MIN_LENGTH} random characters)"
        )
    problem = weakness(configured)
    if problem is not None:
        raise SettingsError(
            f"invalid configuration:\n  AUTH_SECRET: too weak ({problem}); use at least "
            f"{MIN_LENGTH} random characters"
        )
    return configured.encode()


def load_or_create(path: Path) -> bytes:
    """Read the secret in `path`, creating it (mode 0600) first if needed.

    Race-free across processes: the secret is written to a private temporary file and linked
    into place, so a reader never sees a half-written file and exactly one writer wins.
    """
    for _ in range(10):  # read back whichever file got linked (or retry if it vanished)
        existing = _read(path)
        if existing:
            return existing
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(_generate() + "\n")
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: read its secret
                os.link(temporary, path)
        except OSError as exc:
            raise SettingsError(
                f"invalid configuration:\n  AUTH_SECRET: unset, and {path} cannot be created "
                f"({exc.strerror})"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)
    raise SettingsError(f"invalid configuration:\n  AUTH_SECRET: unset, and {path} keeps vanishing")


def _generate() -> str:
    secret = secrets.token_urlsafe(48)
    while weakness(secret) is not None:  # astronomically rare: it spells a placeholder
        secret = secrets.token_urlsafe(48)
    return secret


def _read(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"invalid configuration:\n  AUTH_SECRET: unset, and {path} is unreadable ({exc})"
        ) from None
    if weakness(text) is not None:
        raise SettingsError(
            f"invalid configuration:\n  AUTH_SECRET: unset, and {path} does not hold a usable "
            "secret (delete it to generate a new one)"
        )
    return text.encode()
