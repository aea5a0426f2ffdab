"""structlog set-up: readable lines on the console, JSON lines in LOG_DIR.

Every entry has an ISO 8601 UTC time, a level, a component (api, registry,
health_checker), a message and, inside a request, its request id. A redaction
step runs last before rendering, on our own entries and on those of libraries
(uvicorn, SQLAlchemy), so an API key or bearer token never reaches a log.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Field names whose values are secrets, after lower-casing and '-' → '_'.
_SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "admin_api_key",
        "client_api_keys",
        "authorization",
        "proxy_authorization",
        "password",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_token", "_secret", "_password")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)((?:x[-_])?api[-_]?key|authorization|access[-_]?token|token|secret|password)"
            r"(\"?'?\s*[:=]\s*\"?'?)(?!\[REDACTED\])[^\s\"'&,;}]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), f"sk-{REDACTED}"),
)


def is_secret_field(name: str) -> bool:
    normalized = name.lower().replace("-", "_")
    return normalized in _SECRET_FIELDS or normalized.endswith(_SECRET_SUFFIXES)


class Redactor:
    """Removes secrets from log entries: by field name, by pattern, by value.

    Known secret values (the admin key, client keys, backends' keys) are added
    with `add_secret` and replaced wherever they appear, even in free text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; keys are never that short.
        if secret and len(secret) >= 6:
            self._secrets.add(secret)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.value(item) for item in value)
        return value

    def mapping(self, entry: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(entry.items()):
            if is_secret_field(str(key)) and value not in (None, "", False, True):
                entry[key] = REDACTED
            else:
                entry[key] = self.value(value)
        return entry

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        return dict(self.mapping(event_dict))


def _default_component(component: str) -> Processor:
    def add(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("component", component)
        return event_dict

    return add


def _drop_color_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn adds a second, coloured copy of its message.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    *,
    process: str,
    level: str,
    log_dir: str | None,
    default_component: str,
    redactor: Redactor,
    console: bool = True,
) -> None:
    """Route structlog and stdlib logging to the console and `LOG_DIR/<process>.log`."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _default_component(default_component),
        _drop_color_message,
        structlog.processors.format_exc_info,
        redactor,
    ]
    handlers: list[logging.Handler] = []
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
                ],
            )
        )
        handlers.append(console_handler)
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler reopens the file after logrotate moves it.
        file_handler = logging.handlers.WatchedFileHandler(
            Path(log_dir) / f"{process}.log", encoding="utf-8"
        )
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.EventRenamer("message"),
                    structlog.processors.JSONRenderer(),
                ],
            )
        )
        handlers.append(file_handler)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries log through the root handlers above (so through the redactor).
    # uvicorn's access logger is left as uvicorn set it: off unless asked for.
    for name in ("uvicorn", "uvicorn.error"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    for name in ("httpx", "httpcore", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(component: str) -> structlog.stdlib.BoundLogger:
    """A logger whose entries carry `component` (api, registry, health_checker)."""
    # A lazy proxy: safe to create at import time, before configure_logging runs.
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(component=component)
    return logger
