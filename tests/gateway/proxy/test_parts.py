"""Pure pieces of the proxy as tables: rate limiting, usage extraction, headers."""

from __future__ import annotations

import pytest

from gateway.accounting.feedback import Batch, Feedback, UsageDelta
from gateway.accounting.usage import extract_usage
from gateway.proxy.relay import relayed_headers, upstream_headers
from gateway.routing.policy import Backend
from shared.upstream.trace import trace_context


@pytest.mark.parametrize(
    ("data", "usage"),
    [
        (b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}', (3, 4)),
        (b'{"choices": []}', None),
        (
            b'data: {"choices": [{"delta": {}}]}\n\n'
            b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}}\n\n'
            b"data: [DONE]\n\n",
            (5, 6),
        ),
        (b'data: {"usage": null}\n\ndata: [DONE]\n\n', None),
        (b'data: {"usage": {"prompt_tokens": "x"}}\n\n', None),
        (b'data: {broken "usage"\n\n', None),
        # The start of the answer fell out of the stream's tail window: the usage is whole.
        (b'tail only": 1, "usage": {"prompt_tokens": 1}}', (1, 0)),
        (b'{"usage": {"prompt_tok', None),  # cut inside the usage object
        (b'{"usage": {"prompt_tokens": true, "completion_tokens": 1}}', None),
        (
            b'{"usage": {"prompt_tokens": 9, "completion_tokens": 1, '
            b'"prompt_tokens_details": {"cached_tokens": 0}}}',
            (9, 1),
        ),
        (b'{"content": "say \\"usage\\": {\\"prompt_tokens\\": 5}", "x": 1}', None),
        # The Responses API and Anthropic's Messages API: input and output tokens.
        (b'{"object": "response", "usage": {"input_tokens": 7, "output_tokens": 2}}', (7, 2)),
        (
            b'event: response.completed\ndata: {"response": {"usage": '
            b'{"input_tokens": 4, "output_tokens": 8, "total_tokens": 12}}}\n\n',
            (4, 8),
        ),
        # Ollama's own API: the last record's prompt_eval_count and eval_count.
        (
            b'{"response": "a", "done": false}\n'
            b'{"done": true, "context": [1, 2], "prompt_eval_count": 26, "eval_count": 259}\n',
            (26, 259),
        ),
        (b'{"response": "eval_count", "done": false}\n', None),
    ],
)
def test_extract_usage(data: bytes, usage: tuple[int, int] | None) -> None:
    assert extract_usage(data) == usage


def test_upstream_headers_carry_the_backend_key_only() -> None:
    headers = upstream_headers(Backend("a", "m", "http://a", api_key="k1"), None, "rid")
    assert headers["Authorization"] == "Bearer k1"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept-Encoding"] == "identity"
    assert "Authorization" not in upstream_headers(Backend("a", "m", "http://a"), None, "r")


def test_relayed_headers_drop_hop_by_hop_and_identity() -> None:
    relayed = dict(
        relayed_headers(
            [
                (b"content-type", b"application/json"),
                (b"connection", b"keep-alive"),
                (b"transfer-encoding", b"chunked"),
                (b"content-length", b"10"),
                (b"content-encoding", b"gzip"),
                (b"server", b"uvicorn"),
                (b"set-cookie", b"a=b"),
                (b"x-ratelimit-remaining", b"9"),
            ],
            "server-1",
        )
    )
    assert relayed == {
        b"content-type": b"application/json",
        b"content-encoding": b"gzip",
        b"x-ratelimit-remaining": b"9",
        b"x-gateway-server-id": b"server-1",
    }


def test_relayed_headers_are_an_allow_list() -> None:
    """A backend's CORS headers, cookies, redirects and identity never reach the client."""
    relayed = relayed_headers(
        [
            (b"content-type", b"text/event-stream"),
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-credentials", b"true"),
            (b"set-cookie", b"session=1"),
            (b"location", b"http://127.0.0.1/elsewhere"),
            (b"x-powered-by", b"vllm"),
            (b"keep-alive", b"timeout=5"),
            (b"cache-control", b"no-cache"),
            (b"retry-after", b"3"),
            (b"openai-processing-ms", b"12"),
        ],
        "s",
    )
    assert [name for name, _ in relayed] == [
        b"content-type",
        b"cache-control",
        b"retry-after",
        b"openai-processing-ms",
        b"x-gateway-server-id",
    ]


def test_feedback_gathers_check_requests() -> None:
    feedback = Feedback()
    feedback.record("a", ok=False, latency_ms=5)
    feedback.request_check("a")
    feedback.request_check("a")
    batch = feedback.take()
    assert batch.checks == {"a"} and batch.usage["a"].failures == 1
    assert not feedback.take()
    feedback.give_back(batch)
    assert feedback.pending.checks == {"a"}


def test_feedback_gives_back_a_failed_batch() -> None:
    feedback = Feedback()
    feedback.record("a", ok=True, latency_ms=5, usage=(1, 2))
    batch = feedback.take()
    feedback.record("a", ok=True, latency_ms=5, usage=(1, 2))
    feedback.give_back(batch)
    delta = feedback.pending.usage["a"]
    assert (delta.requests, delta.prompt_tokens, delta.completion_tokens) == (2, 2, 4)
    assert not Batch() and Batch(usage={"a": UsageDelta()})


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("traceparent", "tracestate", "passed_on", "state"),
    [
        (PARENT, "congo=t61rcWkgMzE", True, "congo=t61rcWkgMzE"),
        (f" {PARENT} ", None, True, None),
        (PARENT, "x" * 600, True, None),  # an oversized tracestate is dropped, not the trace
        (None, "congo=t61rcWkgMzE", False, None),
        (PARENT.upper(), None, False, None),  # lower-case hex only
        (PARENT.replace("00-", "ff-", 1), None, False, None),  # version ff is invalid
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None, False, None),
        (f"00-{TRACE}-{'0' * 16}-01", None, False, None),
        (PARENT + "\r\nX-Evil: 1", None, False, None),
    ],
)
def test_trace_context(
    traceparent: str | None, tracestate: str | None, passed_on: bool, state: str | None
) -> None:
    context = trace_context(traceparent, tracestate)
    assert (context is not None) is passed_on
    if context is not None:
        assert context.trace_id == TRACE and context.tracestate == state
        headers = upstream_headers(Backend("a", "m", "http://a"), None, "r", context)
        assert headers["traceparent"] == PARENT
        assert headers.get("tracestate") == state
