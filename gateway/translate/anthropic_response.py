"""OpenAI's answers as Anthropic's: a chat completion as a Message, its stream as the
Messages event sequence, an error as Anthropic's error, a token count as
count_tokens' answer.

The stream's sequence is Anthropic's: `message_start`, then each content block
(`content_block_start`, its deltas, `content_block_stop`: text, or a tool_use
whose input arrives as one `input_json_delta`, written once the call is whole and
its arguments are known to be JSON), then `message_delta` with the stop
reason and the usage, and `message_stop`. The input tokens are known only at
the end of an OpenAI stream, so `message_start` says 0 and `message_delta`
gives them (Anthropic's SDK takes them from there).
"""

from __future__ import annotations

from typing import Any

from gateway.translate.common import (
    CUT_SHORT,
    JSONObject,
    UntranslatableAnswer,
    as_count,
    as_list,
    as_object,
    as_text,
    chunk_of,
    client_fault,
    compact,
    first_choice,
    is_done,
    openai_error_message,
    record_bytes,
    sse_data,
    sse_events,
    tool_arguments,
)
from gateway.translate.text_frame import Fast, TextFrame, text_between

_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_document(status: int, message: str) -> JSONObject:
    """Anthropic's error shape."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_answer(status: int, data: bytes) -> JSONObject:
    """A backend's (or the gateway's own) error body as Anthropic's."""
    return error_document(status, openai_error_message(status, data))


def stop_reason(
    finish_reason: object, matched: object, stops: tuple[str, ...], called: bool = False
) -> str:
    """Anthropic's stop reason. vLLM names the stop string it met (`stop_reason`); an
    answer that calls a tool ends with `tool_use` (clients run the tools on it), whatever
    the backend said (vLLM says `stop` for a call it was told to make), unless cut."""
    if called and finish_reason != "length":
        return "tool_use"
    if finish_reason == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence"
    return _STOP_REASONS.get(as_text(finish_reason), "end_turn")


def _usage(usage: object) -> JSONObject:
    usage = as_object(usage)
    return {
        "input_tokens": as_count(usage.get("prompt_tokens")),
        "output_tokens": as_count(usage.get("completion_tokens")),
    }


def _tool_use(call: object) -> JSONObject:
    call = as_object(call)
    function = as_object(call.get("function"))
    arguments = function.get("arguments")
    parsed = tool_arguments(arguments)
    return {
        "type": "tool_use",
        "id": as_text(call.get("id")) or "toolu_gateway",
        "name": as_text(function.get("name")),
        "input": parsed if parsed is not None else {},
    }


def message_answer(
    document: JSONObject, model: str, message_id: str, stops: tuple[str, ...] = ()
) -> JSONObject:
    """A chat completion as a Message."""
    choice = first_choice(document)
    message = as_object(choice.get("message"))
    content: list[JSONObject] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    content.extend(_tool_use(call) for call in as_list(message.get("tool_calls")))
    called = any(block["type"] == "tool_use" for block in content)
    reason = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stops, called)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": choice.get("stop_reason") if reason == "stop_sequence" else None,
        "usage": _usage(document.get("usage")),
    }


def count_answer(document: JSONObject) -> JSONObject:
    """vLLM's /tokenize answer as count_tokens'. A server whose /tokenize reads only a
    text (llama.cpp's: `content`) answers the chat with no tokens and no count: that is
    no count of the messages, not a count of 0."""
    count = document.get("count")
    if type(count) is not int:
        count = len(as_list(document.get("tokens")))
        if not count:
            raise UntranslatableAnswer(
                "the backend's /tokenize did not count the messages (it reads no chat)"
            )
    return {"input_tokens": count}


def _event(name: str, data: JSONObject) -> bytes:
    """An event built from checked values (texts, counts) and the backend's strings."""
    return b"event: " + name.encode() + b"\ndata: " + record_bytes(data) + b"\n\n"


def message_events(message: JSONObject) -> bytes:
    """A Message (message_answer's) as the stream of events that builds it: for a
    backend that answered a stream's request whole."""
    usage = message["usage"]
    opening = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    opening["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 0}
    events = [_event("message_start", {"type": "message_start", "message": opening})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty: JSONObject = {"type": "text", "text": ""}
            delta: JSONObject = {"type": "text_delta", "text": block["text"]}
        else:
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": compact(block["input"])}
        start = {"type": "content_block_start", "index": index, "content_block": empty}
        events.append(_event("content_block_start", start))
        step = {"type": "content_block_delta", "index": index, "delta": delta}
        events.append(_event("content_block_delta", step))
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    ending = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        _event("message_delta", {"type": "message_delta", "delta": ending, "usage": usage})
    )
    events.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(events)


class AnthropicStream:
    """A chat completion's SSE stream as the Messages event sequence, a run of whole
    events at a time. Pure but for the state it keeps."""

    def __init__(self, model: str, message_id: str, stops: tuple[str, ...] = ()) -> None:
        self.model = model
        self.message_id = message_id
        self.stops = stops
        self.started = False
        self.block: int | None = None  # the open content block's index
        self.block_kind = ""
        self.blocks = 0
        # OpenAI's tool call index -> its id and the pieces of its name and arguments
        self.calls: dict[int, tuple[str, list[str], list[str]]] = {}
        self.finish_reason: object = None
        self.matched: object = None
        self.usage: object = None
        self.done = False
        self.failure: str | None = None  # why it ended with an error event, if it did
        self.text_head = b""
        self.frame = TextFrame()  # the backend's text events, read without parsing
        self.fast: Fast | None = None  # its frame, while a text block is open
        self.framed = False  # whether a run matched the frame since it was learnt

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        message: JSONObject = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self.block is None:
            return b""
        index, self.block = self.block, None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open_block(self, kind: str, block: JSONObject) -> bytes:
        closed = self._close_block()
        self.block, self.block_kind = self.blocks, kind
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return closed + _event("content_block_start", start)

    def _delta(self, delta: JSONObject, index: int | None = None) -> bytes:
        at = self.block if index is None else index
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": at, "delta": delta}
        )

    def _text(self, literal: bytes) -> bytes:
        """A text delta's event (`literal`: the text as a JSON string, not empty)."""
        opened = b""
        if self.block is None or self.block_kind != "text":
            opened = self._open_block("text", {"type": "text", "text": ""})
            # The text deltas' event but for the text (written once: a stream has many).
            self.text_head = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(self.block).encode()
                + b',"delta":{"type":"text_delta","text":'
            )
        return opened + self.text_head + literal + b"}}\n\n"

    def _tool_call(self, call: JSONObject) -> None:
        """A piece of a tool call, kept: the calls are written whole at the end (their
        arguments checked as JSON, which a model's pieces need not be: NaN, a number past
        a double; and in the order of their indexes, whatever order their pieces came)."""
        index = as_count(call.get("index"))
        function = as_object(call.get("function"))
        if index not in self.calls:
            self.calls[index] = (as_text(call.get("id")), [], [])
        _, names, arguments = self.calls[index]
        if not names and as_text(function.get("name")):  # (its first name: some repeat it)
            names.append(function["name"])
        arguments.append(as_text(function.get("arguments")))

    def _tool_blocks(self) -> bytes:
        out = []
        for index, (call_id, names, pieces) in sorted(self.calls.items()):
            block = {
                "type": "tool_use",
                "id": call_id or f"toolu_{self.message_id}_{index}",
                "name": "".join(names),
                "input": {},
            }
            out.append(self._open_block("tool_use", block))
            arguments = tool_arguments("".join(pieces))
            if arguments:
                delta = {"type": "input_json_delta", "partial_json": compact(arguments)}
                out.append(self._delta(delta))
        return b"".join(out)

    def _chunk(self, chunk: JSONObject) -> bytes:
        # Written for speed (a stream has an event per token): plain type checks.
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if type(choices) is list and choices else None
        if type(choice) is not dict:
            return b""
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            self.matched = choice.get("stop_reason")
        delta = choice.get("delta")
        if type(delta) is not dict:
            return b""
        text = delta.get("content")
        if delta.get("tool_calls"):
            for call in as_list(delta["tool_calls"]):
                self._tool_call(as_object(call))
        return self._text(record_bytes(text)) if type(text) is str and text else b""

    def feed(self, events: bytes, now: float | None = None) -> bytes:
        """The Messages events for a run of whole SSE events of a chat completion stream
        (`now` is not read: the Messages events carry no times)."""
        fast = self.fast
        if fast is not None:  # the usual run: one token's text, through the frame
            head, tail, start, cut = fast
            if events.startswith(head) and events.endswith(tail):
                end = len(events) - cut
                if text_between(events, start, end) is not None:
                    self.framed = True
                    return self.text_head + events[start:end] + b"}}\n\n"
        out = self._events(events)
        text_open = self.block is not None and self.block_kind == "text" and not self.done
        self.fast = self.frame.fast if text_open else None
        return out

    def _events(self, events: bytes) -> bytes:
        frame = self.frame
        if self.framed:
            frame.used, self.framed = True, False
        out = [self._start()]
        for event in sse_events(events):
            if self.done:
                break
            literal = frame.text_of(event)
            if literal is not None:  # the usual event: a token's text
                out.append(self._text(literal))
                continue
            payload = sse_data(event)
            if payload is None:
                continue
            if is_done(payload):
                out.append(self._finish())
                continue
            chunk = chunk_of(payload)
            if chunk is None:
                continue
            if isinstance(chunk.get("error"), dict):
                error = chunk["error"]
                out.append(self.close(as_text(error.get("message")) or "backend error"))
                if client_fault(error) is not None:
                    self.failure = None  # (the client's request: no failure of the backend's)
                continue
            frame.learn(event, chunk)
            out.append(self._chunk(chunk))
        return b"".join(out)

    def _finish(self) -> bytes:
        self.done = True
        reason = stop_reason(self.finish_reason, self.matched, self.stops, bool(self.calls))
        delta: dict[str, Any] = {
            "stop_reason": reason,
            "stop_sequence": self.matched if reason == "stop_sequence" else None,
        }
        usage = _usage(self.usage)
        return (
            self._start()
            + self._tool_blocks()
            + self._close_block()
            + _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            + _event("message_stop", {"type": "message_stop"})
        )

    def close(self, failure: str | None, now: float | None = None) -> bytes:
        """What ends the client's stream: Anthropic's error event after a break, or the
        closing events when the backend ended without `[DONE]` but after its finish; an
        answer that ended with neither was cut short (an error event)."""
        self.fast = None
        if self.done:
            return b""
        if failure is None and self.finish_reason is None:
            failure = CUT_SHORT
        if failure is not None:
            self.done, self.failure = True, failure
            return _event("error", error_document(502, failure))
        return self._finish()
