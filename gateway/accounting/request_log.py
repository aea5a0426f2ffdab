"""The proxy's line per request ("request served"), held back and written in batches.

Through structlog's processors this line cost a large part of the worker's
time per request, and rendered from templates right away still much more than
in a tight loop: rendering between requests runs with cold caches and evicts
the hot path's (the README's Performance section has the figures). So a
request only appends its fields to a list; every
BATCH_SECONDS the event loop renders the batch, warm, and writes it with one
write per output. Any other entry drains the batch first, so the files keep
the order. The entry is the one `log.info("request served", ...)` would
write (the test compares them); the model name, the only client text in it,
is redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import NamedTuple

from shared.logging import LogOutputs, Redactor, get_logger

BATCH_SECONDS = 0.02
BATCH_LIMIT = 5000  # written at once past this many, whatever the time
# A request the gateway answered itself with an error (a 401, a 429, a model not
# found, every backend failed): one line, whether or not an attempt had its own.
REFUSED = "request refused"  # 4xx
FAILED = "request failed"  # 5xx


class Served(NamedTuple):
    at: float  # time.time()
    request_id: str
    model: str
    registration_id: str
    status: int
    latency_ms: float
    stream: bool
    client_gone: bool | None
    trace_id: str | None  # 32 hex digits (a W3C traceparent's), when the client sent one
    key_id: str | None = None  # the client key's id (a UUID; never the key)
    event: str = "request served"  # or REFUSED / FAILED: the gateway's own answer


class RequestLog:
    def __init__(
        self, outputs: LogOutputs | None, redactor: Redactor, *, level: str, component: str
    ) -> None:
        self.outputs = outputs
        self.redactor = redactor
        self.component = component
        self.enabled = logging.getLevelName(level) <= logging.INFO
        self.fallback = get_logger(component)
        self.clock = _UtcClock()
        self.pending: list[Served] = []
        self.scheduled = False
        self.draining = threading.Lock()  # another thread's entry may drain too: one at a time
        # A terminal gets structlog's pretty lines: through structlog, right away.
        self.batched = outputs is not None and (outputs.console is None or outputs.plain_console)
        if outputs is not None and self.batched:
            outputs.deferred_sources.append(self.drain)

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
        trace_id: str | None = None,
        key_id: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        entry = Served(
            time.time(),
            request_id,
            model,
            registration_id,
            status,
            latency_ms,
            stream,
            client_gone,
            trace_id,
            key_id,
        )
        self._add(entry)

    def answered_by_gateway(
        self, request_id: str, *, model: str, status: int, latency_ms: float, key_id: str | None
    ) -> None:
        """The gateway's own error answer to a request (no backend's answer was passed
        on): `request refused` (4xx) or `request failed` (5xx), in the same batches."""
        if not self.enabled:
            return
        event = REFUSED if status < 500 else FAILED
        self._add(
            Served(
                time.time(),
                request_id,
                model,
                "",
                status,
                latency_ms,
                False,
                None,
                None,
                key_id,
                event,
            )
        )

    def _add(self, entry: Served) -> None:
        if not self.batched:
            self._through_structlog(entry)
            return
        self.pending.append(entry)
        if len(self.pending) >= BATCH_LIMIT:
            self.drain()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(BATCH_SECONDS, self.drain)
                self.scheduled = True
            except RuntimeError:  # no event loop here: write it now
                self.drain()

    def drain(self) -> None:
        """Render and write what is pending (the loop's timer, another entry, or shutdown)."""
        with self.draining:
            self.scheduled = False
            batch, self.pending = self.pending, []
            if not batch or self.outputs is None:
                return
            outputs = self.outputs
            console = [self._console_line(entry) for entry in batch] if outputs.console else []
            files = [self._json_line(entry) for entry in batch] if outputs.path else []
            outputs.emit(console, files)

    def _through_structlog(self, entry: Served) -> None:
        fields: dict[str, str | int | float | bool] = {
            "model": self.redactor.text(entry.model),
            "registration_id": entry.registration_id,
            "status": entry.status,
            "latency_ms": entry.latency_ms,
            "stream": entry.stream,
        }
        if entry.client_gone is not None:
            fields["client_gone"] = entry.client_gone
        if entry.trace_id is not None:
            fields["trace_id"] = entry.trace_id
        if entry.key_id is not None:
            fields["key_id"] = entry.key_id
        if self.outputs is None:  # logging set up some other way; request_id from the context
            self.fallback.info(entry.event, **fields)
            return
        self.outputs.write(
            "info",
            {
                "timestamp": self.clock.format(entry.at),
                "component": self.component,
                "event": entry.event,
                **fields,
                "request_id": entry.request_id,
            },
        )

    # What KeyValueRenderer and JSONRenderer would write, from templates. Only the
    # model is free text (escaped by repr / json); ids are UUIDs or match
    # choose_request_id's [A-Za-z0-9._:-]; a trace id is 32 hex digits; a key id a UUID.
    def _console_line(self, entry: Served) -> str:
        gone = "" if entry.client_gone is None else f" client_gone={entry.client_gone!r}"
        if entry.trace_id is not None:
            gone += f" trace_id={entry.trace_id!r}"
        if entry.key_id is not None:
            gone += f" key_id={entry.key_id!r}"
        return (
            f"timestamp={self.clock.format(entry.at)!r} level='info' "
            f"component={self.component!r} event={entry.event!r} "
            f"model={self.redactor.text(entry.model)!r} "
            f"registration_id={entry.registration_id!r} status={entry.status!r} "
            f"latency_ms={entry.latency_ms!r} stream={entry.stream!r}{gone} "
            f"request_id={entry.request_id!r}"
        )

    def _json_line(self, entry: Served) -> str:
        gone = (
            "" if entry.client_gone is None else f', "client_gone": {json.dumps(entry.client_gone)}'
        )
        if entry.trace_id is not None:
            gone += f', "trace_id": "{entry.trace_id}"'
        if entry.key_id is not None:
            gone += f', "key_id": "{entry.key_id}"'
        return (
            f'{{"timestamp": "{self.clock.format(entry.at)}", "level": "info", '
            f'"component": "{self.component}", "message": "{entry.event}", '
            f'"model": {json.dumps(self.redactor.text(entry.model))}, '
            f'"registration_id": "{entry.registration_id}", "status": {entry.status!r}, '
            f'"latency_ms": {entry.latency_ms!r}, "stream": {json.dumps(entry.stream)}{gone}, '
            f'"request_id": "{entry.request_id}"}}'
        )


class _UtcClock:
    """ISO 8601 UTC timestamps as structlog's TimeStamper writes them, the date part
    made once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def format(self, at: float) -> str:
        second = int(at)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((at - second) * 1_000_000):06d}Z"
