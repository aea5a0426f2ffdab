"""OpenAI's answers as Ollama's: a chat completion as `/api/chat`'s answer, a stream of
chunks as Ollama's NDJSON lines ending with its final record.

Ollama's final record carries counts (from the backend's usage) and durations
in nanoseconds, which the gateway measures itself (`Timings`): the whole
request, the wait for the first token (Ollama's prompt evaluation) and the
generation after it. Nothing is loaded, so `load_duration` is 0. A tool call's
arguments, a JSON string in OpenAI's API, are an object in Ollama's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.translate.common import (
    CUT_SHORT,
    JSONObject,
    as_count,
    as_list,
    as_object,
    as_text,
    chunk_of,
    client_fault,
    first_choice,
    is_done,
    json_bytes,
    record_bytes,
    sse_data,
    sse_events,
    tool_arguments,
)
from gateway.translate.text_frame import Fast, TextFrame, text_between

NS = 1_000_000_000


@dataclass(frozen=True)
class Timings:
    """When (perf_counter seconds) the request started, its first token came, and now."""

    started: float
    first_token: float | None
    now: float

    def durations(self) -> JSONObject:
        first = self.first_token if self.first_token is not None else self.now
        return {
            "total_duration": max(0, int((self.now - self.started) * NS)),
            "load_duration": 0,
            "prompt_eval_duration": max(0, int((first - self.started) * NS)),
            "eval_duration": max(0, int((self.now - first) * NS)),
        }


def created_at(epoch: float) -> str:
    """`epoch` as Ollama's `created_at` (ISO 8601 in UTC, to the microsecond), as
    `datetime.isoformat` writes it. A stream's start writes one: the date and time to
    the second are formatted once a second (the rest of the call is a fifth of the
    cost), the microseconds rounded as datetime rounds them (half to even)."""
    if type(epoch) is not float or not 0 <= epoch < _LAST_SECOND:
        return _iso(epoch)
    second = int(epoch)
    micro = round((epoch - second) * 1_000_000)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    head = _second(second)
    return f"{head}.{micro:06d}Z" if micro else head + "Z"


_LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59: the last that datetime can hold


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def done_reason(finish_reason: object) -> str:
    """Ollama says `length` for a cut answer and `stop` for every other end."""
    return "length" if finish_reason == "length" else "stop"


def tool_calls(calls: object) -> list[JSONObject]:
    """OpenAI's tool calls (arguments as JSON text) as Ollama's (arguments as an object)."""
    out = []
    for index, call in enumerate(as_list(calls)):
        function = as_object(as_object(call).get("function"))
        arguments = function.get("arguments")
        parsed = tool_arguments(arguments)
        out.append(
            {
                "function": {
                    "index": index,
                    "name": as_text(function.get("name")),
                    "arguments": parsed if parsed is not None else {},
                }
            }
        )
    return out


def _counts(usage: object) -> JSONObject:
    usage = as_object(usage)
    return {
        "prompt_eval_count": as_count(usage.get("prompt_tokens")),
        "eval_count": as_count(usage.get("completion_tokens")),
    }


def _ending(reason: object, usage: object, timings: Timings) -> JSONObject:
    """What a final record says after its text: done, why, durations, counts."""
    return {
        "done": True,
        "done_reason": done_reason(reason),
        **timings.durations(),
        **_counts(usage),
    }


def _final(model: str, when: str, reason: object, usage: object, timings: Timings) -> JSONObject:
    return {"model": model, "created_at": when, **_ending(reason, usage, timings)}


def chat_answer(document: JSONObject, model: str, timings: Timings, epoch: float) -> JSONObject:
    """A chat completion as Ollama's /api/chat answer (stream false)."""
    choice = first_choice(document)
    message = as_object(choice.get("message"))
    out_message: JSONObject = {"role": "assistant", "content": as_text(message.get("content"))}
    if message.get("tool_calls"):
        out_message["tool_calls"] = tool_calls(message.get("tool_calls"))
    final = _final(
        model, created_at(epoch), choice.get("finish_reason"), document.get("usage"), timings
    )
    return {"model": model, "created_at": final["created_at"], "message": out_message, **final}


def generate_answer(document: JSONObject, model: str, timings: Timings, epoch: float) -> JSONObject:
    """A chat or text completion as Ollama's /api/generate answer (stream false)."""
    choice = first_choice(document)
    text = choice.get("text")
    if not isinstance(text, str):
        text = as_text(as_object(choice.get("message")).get("content"))
    final = _final(
        model, created_at(epoch), choice.get("finish_reason"), document.get("usage"), timings
    )
    return {"model": model, "created_at": final["created_at"], "response": text, **final}


def _vectors(document: JSONObject) -> list[Any]:
    data = sorted(
        (as_object(item) for item in as_list(document.get("data"))),
        key=lambda item: as_count(item.get("index")),
    )
    return [as_list(item.get("embedding")) for item in data]


def embed_answer(document: JSONObject, model: str, timings: Timings, epoch: float) -> JSONObject:
    """An embeddings answer as Ollama's /api/embed answer."""
    durations = timings.durations()
    return {
        "model": model,
        "embeddings": _vectors(document),
        "total_duration": durations["total_duration"],
        "load_duration": 0,
        "prompt_eval_count": as_count(as_object(document.get("usage")).get("prompt_tokens")),
    }


def embeddings_answer(
    document: JSONObject, model: str, timings: Timings, epoch: float
) -> JSONObject:
    """An embeddings answer as Ollama's older /api/embeddings answer (one vector)."""
    vectors = _vectors(document)
    return {"embedding": vectors[0] if vectors else []}


def _line(record: JSONObject) -> bytes:
    """A record built from checked values (texts, counts, flags) as an NDJSON line."""
    return record_bytes(record) + b"\n"


def _calls_line(record: JSONObject) -> bytes:
    """A record with tool calls, whose arguments are the backend's JSON as the standard
    parser read it (a NaN in them is written as it came, not as orjson's null)."""
    return json_bytes(record) + b"\n"


class OllamaStream:
    """A chat or text completion's SSE stream as Ollama's NDJSON, one run of events at a
    time: a line per piece of text, the tool calls (whole, as Ollama sends them) when
    the answer ends, then the final record with counts and durations.

    `feed` and `close` are pure but for the state they keep; the caller passes the time,
    or it is read from `clock` where it is needed (not for a token's line)."""

    def __init__(
        self,
        model: str,
        *,
        chat: bool,
        started: float,
        epoch: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.clock = clock
        self.chat = chat
        self.started = started
        self.when = created_at(epoch)
        self.first_token: float | None = None
        # OpenAI's index -> the pieces of its name and of its arguments, joined at the end
        # (a string added to in a dict is copied each time: quadratic in a long call).
        self.calls: dict[int, tuple[list[str], list[str]]] = {}
        self.finish_reason: object = None
        self.usage: object = None
        self.done = False
        self.failure: str | None = None  # why it ended with an error line, if it did
        self.frame = TextFrame()  # the backend's text events, read without parsing
        self.fast: Fast | None = None  # its frame, while a token's line is all a run makes
        self.framed = False  # whether a run matched the frame since it was learnt
        # A piece of text's line, but for the text itself (written once: a stream has many).
        opening = record_bytes({"model": model, "created_at": self.when})[:-1]
        if chat:
            self.text_head = opening + b',"message":{"role":"assistant","content":'
            self.text_tail = b'},"done":false}\n'
        else:
            self.text_head = opening + b',"response":'
            self.text_tail = b',"done":false}\n'
        # The final record, but for its ending (`_ending`, written after it).
        self.final_head = self.text_head + b'"",' if not chat else self.text_head + b'""},'

    def _record(self, **fields: Any) -> JSONObject:
        record: JSONObject = {"model": self.model, "created_at": self.when}
        if self.chat:
            record["message"] = {"role": "assistant", "content": fields.pop("text", "")}
            if "tool_calls" in fields:
                record["message"]["tool_calls"] = fields.pop("tool_calls")
        else:
            record["response"] = fields.pop("text", "")
        record.update(fields)
        return record

    def _piece(self, chunk: JSONObject, now: float) -> bytes:
        # Written for speed (a stream has an event per token): plain type checks.
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if type(choices) is list and choices else None
        if type(choice) is not dict:
            return b""
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        calls: list[Any] = []
        if type(delta) is dict:
            text = delta.get("content")
            if delta.get("tool_calls"):
                calls = as_list(delta["tool_calls"])
                for call in calls:
                    self._add_call(as_object(call))
        else:
            text = choice.get("text")
        has_text = type(text) is str and text != ""
        if self.first_token is None and (has_text or calls):
            self.first_token = now
        if not has_text:
            return b""
        return self.text_head + record_bytes(text) + self.text_tail

    def _text(self, literal: bytes, now: float) -> bytes:
        """The line of a text event read through the frame (`literal`: its JSON string,
        not empty)."""
        if self.first_token is None:
            self.first_token = now
        return self.text_head + literal + self.text_tail

    def _add_call(self, call: JSONObject) -> None:
        index = as_count(call.get("index"))
        function = as_object(call.get("function"))
        names, arguments = self.calls.setdefault(index, ([], []))
        if not names and as_text(function.get("name")):  # (its first name: some repeat it)
            names.append(function["name"])
        arguments.append(as_text(function.get("arguments")))

    def feed(self, events: bytes, now: float | None = None) -> bytes:
        """The NDJSON lines for a run of whole SSE events."""
        fast = self.fast
        if fast is not None:  # the usual run: one token's text, through the frame
            head, tail, start, cut = fast
            if events.startswith(head) and events.endswith(tail):
                end = len(events) - cut
                if text_between(events, start, end) is not None:
                    self.framed = True
                    return self.text_head + events[start:end] + self.text_tail
        out = self._events(events, self.clock() if now is None else now)
        self.fast = None if self.done else self.frame.fast
        return out

    def _events(self, events: bytes, now: float) -> bytes:
        frame = self.frame
        if self.framed:
            frame.used, self.framed = True, False
        out = []
        for event in sse_events(events):
            if self.done:
                break
            literal = frame.text_of(event)
            if literal is not None:  # the usual event: a token's text
                out.append(self._text(literal, now))
                continue
            payload = sse_data(event)
            if payload is None:
                continue
            if is_done(payload):
                out.append(self._finish(now))
                continue
            chunk = chunk_of(payload)
            if chunk is None:
                continue
            if isinstance(chunk.get("error"), dict):
                error = chunk["error"]
                message = as_text(error.get("message")) or "backend error"
                out.append(_line({"error": message}))
                self.done = True
                self.failure = None if client_fault(error) is not None else message
                continue
            frame.learn(event, chunk)
            out.append(self._piece(chunk, now))
        return b"".join(out)

    def _finish(self, now: float) -> bytes:
        self.done = True
        lines = []
        if self.calls:
            calls = [
                {"function": {"name": "".join(names), "arguments": "".join(arguments)}}
                for _, (names, arguments) in sorted(self.calls.items())
            ]
            lines.append(_calls_line(self._record(tool_calls=tool_calls(calls), done=False)))
        timings = Timings(self.started, self.first_token, now)
        ending = record_bytes(_ending(self.finish_reason, self.usage, timings))
        lines.append(self.final_head + ending[1:] + b"\n")
        return b"".join(lines)

    def close(self, failure: str | None, now: float | None = None) -> bytes:
        """What ends the client's stream: Ollama's error line after a break, or the final
        record when the backend ended without `[DONE]` but after its finish; an answer
        that ended with neither was cut short (an error line, not a finished answer)."""
        self.fast = None
        if self.done:  # its final record or error line was written: nothing follows it
            return b""
        if failure is None and self.finish_reason is None:
            failure = CUT_SHORT
        if failure is not None:
            self.done, self.failure = True, failure
            return _line({"error": failure})
        return self._finish(self.clock() if now is None else now)


def loaded_answer(model: str, reason: str, *, chat: bool, epoch: float) -> JSONObject:
    """Ollama's answer to a request with nothing to answer (`reason`: load or unload)."""
    record: JSONObject = {"model": model, "created_at": created_at(epoch)}
    if chat:
        record["message"] = {"role": "assistant", "content": ""}
    else:
        record["response"] = ""
    record.update(done=True, done_reason=reason)
    return record


def show_answer(model: str, details: Mapping[str, object], created: float) -> JSONObject:
    """What the pool knows of a model (its backends' `/v1/models` entry) as Ollama's
    /api/show answer; what only a model file says (template, license) is empty."""
    info: JSONObject = {"general.architecture": "", "general.basename": model}
    length = details.get("max_model_len")
    if type(length) is int:
        info["general.context_length"] = length
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "license": "",
        "modified_at": created_at(created),
        "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""},
        "model_info": info,
        "capabilities": ["completion"],
    }
