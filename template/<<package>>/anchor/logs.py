"""Logging: one line per record, as text or JSON (LOG_FORMAT), with the current context.

The context is a `contextvars.ContextVar`: the server's middleware adds `request_id` while
it handles a request, the worker adds `task_id`, `task` and `attempt` while a task attempt
runs, and `bind(...)` adds your own fields for a block. Every line emitted meanwhile
(the app's, the libraries', uvicorn's access log) carries them.

Secrets stay out: credentials in URLs (`postgresql://user:***@host`) and `password=`-style
values are masked in every line, and the query values in uvicorn's access log are masked.
The middleware never logs headers. `python -m <package> serve|dev|worker` configures
logging once with `configure_logging` and hands the same configuration to uvicorn.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.config
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any, Literal

LogFormat = Literal["text", "json"]

_EMPTY: Mapping[str, object] = {}
_context: ContextVar[Mapping[str, object]] = ContextVar("anchor_log_context", default=_EMPTY)


def current_context() -> Mapping[str, object]:
    """The fields added to log lines emitted now."""
    return _context.get()


def request_id() -> str | None:
    """The id of the HTTP request being handled, if any."""
    value = _context.get().get("request_id")
    return value if isinstance(value, str) else None


def set_context(**fields: object) -> None:
    """Add `fields` until the current asyncio task (or thread) ends; for code that owns its
    task, such as one task attempt in the worker. Elsewhere prefer `bind`."""
    _context.set({**_context.get(), **fields})


def push_context(**fields: object) -> Token[Mapping[str, object]]:
    """Add `fields` until `pop_context(token)`; `bind` is the usual way."""
    return _context.set({**_context.get(), **fields})


def pop_context(token: Token[Mapping[str, object]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` to every log line emitted inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# Secrets

_URL_CREDENTIALS = re.compile(r"(://[^:/@\s\"']+):[^@\s\"']*@")
_SECRET_VALUES = re.compile(
    r"\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)=[^\s&;,\"'\\]+",
    re.IGNORECASE,
)
_QUERY_VALUES = re.compile(r"=[^&#]*")


def scrub(text: str) -> str:
    """Mask credentials in URLs and `password=`-style values."""
    if "=" not in text and "@" not in text:
        return text
    text = _URL_CREDENTIALS.sub(r"\1:***@", text)
    return _SECRET_VALUES.sub(r"\1=***", text)


def mask_query(path: str) -> str:
    """`/items?token=abc&q=1` -> `/items?token=***&q=***`."""
    path_only, sep, query = path.partition("?")
    return path_only + sep + _QUERY_VALUES.sub("=***", query) if sep else path


# Handlers, filters, formatters

_ACCESS_LOGGER = "uvicorn.access"


class ContextFilter(logging.Filter):
    """Stamps the current context on each record (as `record.context`), and masks the query
    values of uvicorn's access log. Install it on handlers: it runs where the record is made."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = _context.get()
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple):
            args = record.args
            if len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
                record.args = (*args[:2], mask_query(args[2]), *args[3:])
        return True


def _record_context(record: logging.LogRecord) -> Mapping[str, object]:
    context = getattr(record, "context", None)
    return context if isinstance(context, Mapping) else _context.get()


# LogRecord attributes that are not `extra=` fields.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "context",
    "taskName",
    "color_message",
}


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, `extra=`
    fields, and `exception` (the traceback) when there is one. Secrets are masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_record_context(record))
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple):
            args = record.args
            if len(args) == 5:
                entry.update(method=args[1], path=args[2], status=args[4])
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` (the context fields), for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _record_context(record)
        if context:
            fields = " ".join(f"{key}={value}" for key, value in context.items())
            head, sep, tail = line.partition("\n")  # keep fields on the message's first line
            line = f"{head} [{fields}]{sep}{tail}"
        return scrub(line)


def logging_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` configuration; give it to uvicorn as `log_config` so its
    worker processes and its own loggers (error, access) log the same way."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    level = level.upper()
    uvicorn = {"level": level, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {"anchor": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "anchor": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "anchor",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["anchor"]},
        "loggers": {name: dict(uvicorn) for name in ("uvicorn", "uvicorn.error", _ACCESS_LOGGER)},
    }


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Log records of `level` and above to stderr, one line each, in format `fmt`."""
    logging.config.dictConfig(logging_config(level, fmt))
