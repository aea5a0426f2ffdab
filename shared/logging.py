"""structlog set-up: readable lines on the console, JSON lines in LOG_DIR.

Every entry has an ISO 8601 UTC time, a level, a component (api, registry,
health_checker), a message and, inside a request, its request id. A redaction
step runs last before rendering, on our own entries and on those of libraries
(uvicorn, SQLAlchemy), so an API key or bearer token never reaches a log.
"""

from __future__ import annotations

import atexit
import functools
import json
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
_TRIGGER = re.compile(r"(?i)bearer|basic|key|token|secret|password|authorization|sk-")
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
        # however many backends have keys. None while there are no secrets.
        self._known: re.Pattern[str] | None = None
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; keys are never that short.
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.add(secret)
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._known = re.compile("|".join(re.escape(known) for known in ordered))

    def text(self, value: str) -> str:
        if self._known is not None:
            value = self._known.sub(REDACTED, value)
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
    # Entries written with flush=False (the proxy's line per request) reach the
    # files at most this much later: one write(2) per batch instead of two per line.
    FLUSH_SECONDS = 0.2

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
        self.unflushed = False
        self.flusher: threading.Thread | None = None
        self.stopped = threading.Event()
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
                moved = os.stat(self.path).st_ino != self.inode
            except FileNotFoundError:
                moved = True
            if moved:
                self._open()
        return self.file

    def write(self, method: str, event_dict: EventDict, *, flush: bool = True) -> None:
        """Render and write one entry; `flush=False` leaves it to the flusher thread
        (at most FLUSH_SECONDS later, or with the next flushed entry, in order)."""
        event_dict.setdefault("level", method)
        console_line = (
            str(self.console_renderer(None, method, dict(event_dict))) if self.console else None
        )
        json_entry = dict(event_dict)
        json_entry["message"] = json_entry.pop("event", "")
        json_line = str(self.json_renderer(None, method, json_entry)) if self.path else None
        self.emit(console_line, json_line, flush=flush)

    def emit(self, console_line: str | None, json_line: str | None, *, flush: bool = True) -> None:
        """Write lines already rendered (RequestLog renders its own)."""
        with self.lock:
            if console_line is not None and self.console is not None:
                self.console.write(f"{console_line}\n")
            if json_line is not None:
                file = self._file_for_now()
                if file is not None:
                    file.write(f"{json_line}\n")
            if flush:
                self._flush()
            elif not self.unflushed:
                self.unflushed = True
                self._start_flusher()

    def _flush(self) -> None:
        self.unflushed = False
        for stream in (self.console, self.file):
            if stream is not None and not stream.closed:
                stream.flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _start_flusher(self) -> None:
        if self.flusher is None:
            self.flusher = threading.Thread(
                target=self._flush_periodically, name="log-flusher", daemon=True
            )
            self.flusher.start()
            atexit.register(self.flush)

    def _flush_periodically(self) -> None:
        while not self.stopped.wait(self.FLUSH_SECONDS):
            if self.unflushed:
                self.flush()

    def close(self) -> None:
        self.stopped.set()
        atexit.unregister(self.flush)
        with self.lock:
            self._flush()
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


class RequestLog:
    """The proxy's one line per request ("request served"), without structlog's chain.

    Measured with `make bench` (two gateways side by side, one with the line at
    debug): through structlog's processors this line cost ~70 µs of the
    worker's core per request, more than routing and forwarding together. Its
    fields are known: ids and numbers the gateway made, and the model name,
    the only client text, which is redacted. So the entry is built in its final
    form (the same keys as `log.info(...)` would write) and handed to the same
    outputs. Without outputs (logging set up some other way) it goes through
    structlog after all.
    """

    def __init__(
        self, outputs: LogOutputs | None, redactor: Redactor, *, level: str, component: str
    ) -> None:
        self.outputs = outputs
        self.redactor = redactor
        self.component = component
        self.enabled = logging.getLevelName(level) <= logging.INFO
        self.fallback = get_logger(component)
        self.clock = _UtcClock()

    def served(
        self,
        request_id: str,
        *,
        model: str,
        registration_id: str,
        status: int,
        latency_ms: float,
        stream: bool,
        client_gone: bool | None = None,
    ) -> None:
        if not self.enabled:
            return
        fields: dict[str, str | int | float | bool] = {
            "model": self.redactor.text(model),
            "registration_id": registration_id,
            "status": status,
            "latency_ms": latency_ms,
            "stream": stream,
        }
        if client_gone is not None:
            fields["client_gone"] = client_gone
        outputs = self.outputs
        if outputs is None:
            self.fallback.info("request served", **fields)
            return
        fields["request_id"] = request_id
        timestamp = self.clock.now()
        if outputs.console is not None and not outputs.plain_console:  # a terminal: pretty
            entry = {"timestamp": timestamp, "component": self.component, **fields}
            outputs.write("info", {**entry, "event": "request served"}, flush=False)
            return
        # What KeyValueRenderer and JSONRenderer would write, from templates: a
        # fifth of the time. Only the model is free text (escaped by repr / json);
        # ids are UUIDs or match [A-Za-z0-9._:-] (choose_request_id).
        gone = "" if client_gone is None else f" client_gone={client_gone!r}"
        gone_json = "" if client_gone is None else f', "client_gone": {json.dumps(client_gone)}'
        console_line = None
        if outputs.console is not None:
            console_line = (
                f"timestamp={timestamp!r} level='info' component={self.component!r} "
                f"event='request served' model={fields['model']!r} "
                f"registration_id={registration_id!r} status={status!r} "
                f"latency_ms={latency_ms!r} stream={stream!r}{gone} request_id={request_id!r}"
            )
        json_line = None
        if outputs.path is not None:
            json_line = (
                f'{{"timestamp": "{timestamp}", "level": "info", "component": "{self.component}", '
                f'"message": "request served", "model": {json.dumps(fields["model"])}, '
                f'"registration_id": "{registration_id}", "status": {status!r}, '
                f'"latency_ms": {latency_ms!r}, "stream": {json.dumps(stream)}{gone_json}, '
                f'"request_id": "{request_id}"}}'
            )
        outputs.emit(console_line, json_line, flush=False)


class _UtcClock:
    """ISO 8601 UTC timestamps as TimeStamper writes them, the date part made once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((now - second) * 1_000_000):06d}Z"


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
