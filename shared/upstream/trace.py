"""A client's W3C trace context (traceparent, tracestate), passed on to the backend so
that its spans join the client's trace."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
MAX_TRACESTATE = 512


@dataclass(frozen=True)
class TraceContext:
    """A client's W3C trace context (traceparent, tracestate), passed on to the backend."""

    traceparent: str
    tracestate: str | None
    trace_id: str


def trace_context(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The trace context worth passing on: a well-formed version-00 traceparent whose ids
    are not all zeros (W3C Trace Context), with its tracestate if that is sane."""
    if traceparent is None:
        return None
    parent = traceparent.strip()
    found = _TRACEPARENT.match(parent)
    if found is None or set(found.group(1)) == {"0"} or set(found.group(2)) == {"0"}:
        return None
    state = tracestate.strip() if tracestate else None
    if state is not None and (len(state) > MAX_TRACESTATE or not state.isprintable()):
        state = None
    return TraceContext(parent, state, found.group(1))
