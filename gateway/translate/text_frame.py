"""A stream's text events, read without parsing their JSON: most of a chat stream is
events that differ from one another only in the token's text.

An OpenAI backend (vLLM, llama.cpp, Ollama) writes each token as an event such as

    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733300000,
           "model":"m","choices":[{"index":0,"delta":{"content":" Paris"},...}]}

and every such event of a stream has the same bytes but for the content's JSON
string. Parsing each with `json.loads` and writing its text again cost most of
what a translated stream added per event. So once an event has been parsed and
found to be plain text (`plain_text`), its bytes are kept as a frame: all of
them before the content's string (`head`) and after it (`tail`). A later
event with the same head and tail, and between them one JSON string and
nothing else, is the same document with another text: its string is handed
over as it is, and the translation splices it into its own event. Anything
else (a tool call, the finish, the usage, an error, another frame) is parsed.

A backend whose frames change with every event (a per-event random field) is
learnt MAX_IDLE_FRAMES times, and then no more: each event is parsed, as before.
"""

from __future__ import annotations

import re

from gateway.translate.common import JSONObject, chunk_of

# One JSON string, as the standard parser accepts it (no raw control characters,
# only its escapes); possessive, so that a string that does not match fails fast.
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_CONTENT = re.compile(rb'"content"[ \t]*:[ \t]*(' + _STRING.pattern + rb")")
MAX_CANDIDATES = 3
# A text no backend sends, put in a candidate's place to prove it is the content.
MARKER_TEXT = "\x00gateway-text-frame\x00"
MARKER = b'"\\u0000gateway-text-frame\\u0000"'
MAX_IDLE_FRAMES = 3  # frames learnt in a row that no event matched: the backend's vary


def plain_text(chunk: JSONObject) -> bool:
    """Whether a parsed chunk is text and nothing else a translation reads: one choice
    whose delta has a string content, no tool calls, no finish, no usage, no error."""
    choices = chunk.get("choices")
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        return False
    choice = choices[0]
    delta = choice.get("delta")
    return (
        type(delta) is dict
        and type(delta.get("content")) is str
        and not delta.get("tool_calls")
        and not choice.get("finish_reason")
        and not chunk.get("usage")
        and not isinstance(chunk.get("error"), dict)
    )


class TextFrame:
    """The bytes the text events of one stream share (see the module's docstring)."""

    def __init__(self) -> None:
        self.head = b""  # b"": no frame
        self.tail = b""
        self.run_tail = b""  # the tail and the blank line that ends an event
        self.used = False  # whether an event matched the frame
        self.idle = 0  # frames learnt in a row that no event matched

    def text_of(self, event: bytes) -> bytes | None:
        """The JSON string of the text of `event` (one SSE event, its blank line
        removed) when it is framed as the frame's; else None."""
        head, tail = self.head, self.tail
        if not head or not event.startswith(head) or not event.endswith(tail):
            return None
        return self._literal(event, len(head), len(event) - len(tail))

    def text_of_run(self, run: bytes) -> bytes | None:
        """text_of for a run of events that is one text event, framed as the frame's
        (and so of one line: neither the frame nor a JSON string holds a line end).
        It runs for nearly every event of a stream: _literal is written out here."""
        head, tail = self.head, self.run_tail
        if not head or not run.startswith(head) or not run.endswith(tail):
            return None
        start, end = len(head), len(run) - len(tail)
        if _STRING.fullmatch(run, start, end) is None:
            return None
        literal = run[start:end]
        if not literal.isascii():
            return self._literal(literal, 0, len(literal))
        self.used = True
        return literal

    def _literal(self, data: bytes, start: int, end: int) -> bytes | None:
        if _STRING.fullmatch(data, start, end) is None:
            return None
        literal = data[start:end]
        if not literal.isascii():
            try:
                literal.decode()
            except UnicodeDecodeError:
                return None  # parsed, its bad bytes replaced, as the backend's others
        self.used = True
        return literal

    def learn(self, event: bytes, chunk: JSONObject) -> None:
        """Keep `event`'s frame: `chunk` is its parsed payload. Only an event with some
        text is learnt from (a stream's first, the role's, has none, and a frame of
        its own)."""
        if self.idle >= MAX_IDLE_FRAMES or not plain_text(chunk):
            return
        if chunk["choices"][0]["delta"]["content"] in ("", MARKER_TEXT):
            return
        span = content_span(event)
        if span is None:
            return
        self.idle = 0 if self.used else self.idle + (1 if self.head else 0)
        self.head, self.tail, self.used = event[: span[0]], event[span[1] :], False
        self.run_tail = self.tail + b"\n\n"


def content_span(event: bytes) -> tuple[int, int] | None:
    """Where the JSON string of `choices[0].delta.content` sits in a one-line `data:`
    event whose payload is plain text (as the standard parser reads it: the last of
    duplicate keys); None when it cannot be told.

    A candidate (a `"content":` member's string, last first) is proved by parsing
    the event with MARKER in its place: if that text is the content the parser
    reads, the candidate was a whole string token in the payload's grammar (had it
    begun inside a string, MARKER's backslashes would fall outside one, or its text
    would be joined to other characters), so any other string there is the content."""
    if not event.startswith(b"data:") or b"\n" in event:
        return None
    payload = 6 if event.startswith(b"data: ") else 5
    candidates = [match.span(1) for match in _CONTENT.finditer(event, payload)]
    for start, end in reversed(candidates[-MAX_CANDIDATES:]):
        probe = chunk_of(event[payload:start] + MARKER + event[end:])
        if (
            probe is not None
            and plain_text(probe)
            and probe["choices"][0]["delta"]["content"] == MARKER_TEXT
        ):
            return start, end
    return None
