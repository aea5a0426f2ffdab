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

The translations read a run through the frame themselves, first thing in their
`feed` (`fast`: the frame as a tuple; `text_between`: the string's check), so that
a token costs one call of theirs and a regular expression's match: a call more per
token was a good part of what a translated stream cost a gateway.
"""

from __future__ import annotations

import re

from gateway.translate.common import JSONObject, chunk_of

# One JSON string, as the standard parser accepts it (no raw control characters,
# only its escapes); possessive, so that a string that does not match fails fast.
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
# The same of one character at least, in valid UTF-8 (the bytes go to the client as
# they are): what a frame's text must be. Its `fullmatch(run, start, end)`.
_TEXT = re.compile(
    rb'"(?:[\x20\x21\x23-\x5b\x5d-\x7f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}'
    rb"|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb'|\xf4[\x80-\x8f][\x80-\xbf]{2})++"'
)
text_between = _TEXT.fullmatch
# (head, run_tail, len(head), len(run_tail)): a run of one text event is
# head + its text's JSON string + run_tail.
Fast = tuple[bytes, bytes, int, int]
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
        self.fast: Fast | None = None  # the frame, for a run of one event
        self.used = False  # whether an event matched the frame
        self.idle = 0  # frames learnt in a row that no event matched

    def text_of(self, event: bytes) -> bytes | None:
        """The JSON string of the text of `event` (one SSE event, its blank line
        removed) when it is framed as the frame's and not empty; else None."""
        head, tail = self.head, self.tail
        if not head or not event.startswith(head) or not event.endswith(tail):
            return None
        end = len(event) - len(tail)
        if text_between(event, len(head), end) is None:
            return None
        self.used = True
        return event[len(head) : end]

    def text_of_run(self, run: bytes) -> bytes | None:
        """text_of for a run of events that is one text event, framed as the frame's
        (and so of one line: neither the frame nor a JSON string holds a line end).
        (The translations' `feed` does this itself, with `fast`.)"""
        if self.fast is None:
            return None
        head, run_tail, start, cut = self.fast
        if not run.startswith(head) or not run.endswith(run_tail):
            return None
        end = len(run) - cut
        if text_between(run, start, end) is None:
            return None
        self.used = True
        return run[start:end]

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
        run_tail = self.tail + b"\n\n"
        self.fast = (self.head, run_tail, len(self.head), len(run_tail))


def _utf8(event: bytes) -> bool:
    try:
        return event.isascii() or bool(event.decode())
    except UnicodeDecodeError:
        return False


def content_span(event: bytes) -> tuple[int, int] | None:
    """Where the JSON string of `choices[0].delta.content` sits in a one-line `data:`
    event whose payload is plain text (as the standard parser reads it: the last of
    duplicate keys); None when it cannot be told.

    A candidate (a `"content":` member's string, last first) is proved by parsing
    the event with MARKER in its place: if that text is the content the parser
    reads, the candidate was a whole string token in the payload's grammar (had it
    begun inside a string, MARKER's backslashes would fall outside one, or its text
    would be joined to other characters), so any other string there is the content.
    An event that is not UTF-8 is not learnt from: the parser reads it with its bad
    bytes replaced, so its frame is not what its bytes are (and other events of the
    same bytes would be parsed all the same)."""
    if not event.startswith(b"data:") or b"\n" in event or not _utf8(event):
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
