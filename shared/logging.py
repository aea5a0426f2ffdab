"""structlog set-up: readable lines on the console, JSON lines in LOG_DIR.

Every entry has an ISO 8601 UTC time, a level, a component (api, registry,
health_checker), a message and, inside a request, its request id. A redaction
step runs last before rendering, on our own entries and on those of libraries
(uvicorn, SQLAlchemy), so an API key or bearer token never reaches a log.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

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
# Cheap pre-check: a string none of these occur in cannot match a pattern below.
_TRIGGER = re.compile(r"(?i)bearer|basic|key|token|secret|password|authorization|sk-|mvk_")
# Fields our own processors add; they never carry user data.
_GENERATED_FIELDS = frozenset({"timestamp", "level", "component", "request_id"})

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
    # A client key (gateway/admission/key_format.py: `mvk_` and 32 characters) by its
    # shape, however many there are; its 8-character prefix, shown on purpose, is kept.
    (re.compile(r"\bmvk_[A-Za-z0-9_-]{16,}"), f"mvk_{REDACTED}"),
)


@functools.lru_cache(maxsize=1024)
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
        # All known values in one pattern (longest first): one scan per string,
        # however many backends have keys. Compiled when next needed after a change,
        # so loading a thousand keys compiles it once.
        self._known: re.Pattern[str] | None = None
        self._stale = False
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; keys are never that short.
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.add(secret)
            self._stale = True

    def _known_values(self) -> re.Pattern[str] | None:
        if self._stale:
            self._stale = False
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._known = re.compile("|".join(re.escape(known) for known in ordered))
        return self._known

    def text(self, value: str) -> str:
        known = self._known_values()
        if known is not None:
            value = known.sub(REDACTED, value)
        if _TRIGGER.search(value) is None:
            return value
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
            if key in _GENERATED_FIELDS or value is None or isinstance(value, int | float):
                continue
            if is_secret_field(str(key)) and value not in ("", False, True):
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


class LogOutputs:
    """Writes each entry twice: a readable line on the console, a JSON line to a file.

    structlog hands entries straight here (no stdlib LogRecord, no formatter
    chain), which keeps a log line to a few tens of microseconds: the proxy
    logs every request. The file is reopened when logrotate moves it.
    """

    REOPEN_CHECK_SECONDS = 1.0
    # A full or unwritable log disk loses log lines, never an answer: the loss is
    # reported on stderr at most this often, not once per entry.
    FAILURE_REPORT_SECONDS = 60.0

    def __init__(self, console: TextIO | None, path: Path | None) -> None:
        self.console = console
        self.path = path
        self.lock = threading.Lock()
        # People at a terminal get structlog's aligned, coloured lines; a console
        # that is a pipe (systemd, make run under a tool) gets cheaper key=value lines.
        self.plain_console = console is not None and not console.isatty()
        self.console_renderer: Processor = (
            structlog.dev.ConsoleRenderer(colors=True)
            if console is not None and not self.plain_console
            else structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "component", "event"], drop_missing=True
            )
        )
        self.json_renderer = structlog.processors.JSONRenderer()
        self.file: TextIO | None = None
        self.inode: int | None = None
        self.checked = 0.0
        # Writers that hold entries back to write them in batches (gateway's
        # RequestLog): drained before any other entry, so the files keep the order.
        self.deferred_sources: list[Callable[[], None]] = []
        self.lost_lines = 0
        self.last_failure: str | None = None
        self.reported_at = -self.FAILURE_REPORT_SECONDS
        if path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        if self.file is not None:
            self.file.close()
        self.file = self.path.open("a", encoding="utf-8")
        self.inode = os.fstat(self.file.fileno()).st_ino

    def _file_for_now(self) -> TextIO | None:
        now = time.monotonic()
        if self.path is not None and now - self.checked >= self.REOPEN_CHECK_SECONDS:
            self.checked = now
            try:
                moved = self.file is None or os.stat(self.path).st_ino != self.inode
            except FileNotFoundError:
                moved = True
            if moved:
                self._open()
        return self.file

    def _lost(self, count: int, error: Exception, where: str) -> None:
        """Lines that could not be written: counted, and said once a minute."""
        self.lost_lines += count
        self.last_failure = f"{where}: {type(error).__name__}: {error}"
        now = time.monotonic()
        if now - self.reported_at < self.FAILURE_REPORT_SECONDS:
            return
        self.reported_at = now
        report = (
            f"logging failed ({self.last_failure}); {self.lost_lines} line(s) lost so far; "
            f"next report in {self.FAILURE_REPORT_SECONDS:g}s at the earliest\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, report.encode("utf-8", "replace"))

    def write(self, method: str, event_dict: EventDict) -> None:
        """Render one entry both ways and write it, after anything held back."""
        self.drain_deferred()
        event_dict.setdefault("level", method)
        console_line = (
            str(self.console_renderer(None, method, dict(event_dict))) if self.console else None
        )
        json_entry = dict(event_dict)
        json_entry["message"] = json_entry.pop("event", "")
        json_line = str(self.json_renderer(None, method, json_entry)) if self.path else None
        self.emit(
            [console_line] if console_line is not None else [],
            [json_line] if json_line is not None else [],
        )

    def emit(self, console_lines: list[str], json_lines: list[str]) -> None:
        """Write lines already rendered (one write per output), and flush."""
        with self.lock:
            if console_lines and self.console is not None and not self.console.closed:
                try:
                    self.console.write("\n".join(console_lines) + "\n")
                    self.console.flush()
                except (OSError, ValueError) as error:
                    self._lost(len(console_lines), error, "console")
            if json_lines:
                try:
                    file = self._file_for_now()
                    if file is not None:
                        file.write("\n".join(json_lines) + "\n")
                        file.flush()
                except (OSError, ValueError) as error:
                    self._lost(len(json_lines), error, str(self.path))
                    self._drop_file()

    def _drop_file(self) -> None:
        """After a failed write: drop what the file object buffered (it would fail
        again on every flush) and reopen on the next check."""
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                file.close()

    def drain_deferred(self) -> None:
        for drain in self.deferred_sources:
            drain()

    def close(self) -> None:
        self.drain_deferred()
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class _OutputsLogger:
    """The "logger" at the end of structlog's chain: every level goes to LogOutputs."""

    def __init__(self, outputs: LogOutputs) -> None:
        self._outputs = outputs

    def __getattr__(self, method: str) -> Callable[[EventDict], None]:
        def write(event_dict: EventDict) -> None:
            self._outputs.write(method, event_dict)

        return write


def _hand_over(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> Any:
    return (event_dict,), {}


class _StdlibBridge(logging.Handler):
    """Library logs (uvicorn, SQLAlchemy, alembic) through the same processors and outputs."""

    def __init__(self, outputs: LogOutputs, processors: list[Processor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.processors = processors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = record.levelname.lower()
            event_dict: EventDict = {"event": record.getMessage(), "logger": record.name}
            if record.exc_info:
                event_dict["exc_info"] = record.exc_info
            for processor in self.processors:
                event_dict = processor(None, method, event_dict)  # type: ignore[assignment]
            self.outputs.write(method, event_dict)
        except Exception:  # noqa: BLE001 - logging must never take the process down
            self.handleError(record)


def configure_logging(
    *,
    process: str,
    level: str,
    log_dir: str | None,
    default_component: str,
    redactor: Redactor,
    console: bool = True,
) -> LogOutputs:
    """Send structlog and stdlib logging to the console and `LOG_DIR/<process>.log`."""
    path = None
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        path = Path(log_dir) / f"{process}.log"
    outputs = LogOutputs(sys.stderr if console else None, path)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _default_component(default_component),
        _drop_color_message,
        structlog.processors.format_exc_info,
        redactor,
    ]
    numeric_level = logging.getLevelName(level)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(_StdlibBridge(outputs, shared))
    root.setLevel(numeric_level)
    # Libraries log through the bridge (so through the redactor). uvicorn's
    # access logger is left as uvicorn set it: off unless asked for.
    for name in ("uvicorn", "uvicorn.error"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    for name in ("httpx", "httpcore", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))

    structlog.configure(
        processors=[*shared, _hand_over],
        logger_factory=lambda *args: _OutputsLogger(outputs),
        # Level filtering in the method itself: a disabled level costs nothing.
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Not cached: loggers made before a reconfiguration (the `gateway` command
        # configures once for itself and once in the app factory) follow it.
        cache_logger_on_first_use=False,
    )
    return outputs


def get_logger(component: str) -> FilteringBoundLogger:
    """A logger whose entries carry `component` (api, registry, health_checker)."""
    # A lazy proxy: safe to create at import time, before configure_logging runs.
    logger: FilteringBoundLogger = structlog.get_logger(component=component)
    return logger
