"""The pure translations as tables, on payloads in the shapes the real servers and
clients send: Ollama's API docs (chat with tools, generate, embed), Anthropic's
Messages docs (content blocks, tool_use/tool_result, the stream's events), and
vLLM's chat completions (its `stop_reason` naming the stop string met)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gateway.proxy.translated import dropped_header
from gateway.translate import anthropic_request, anthropic_response, ollama_request
from gateway.translate import ollama_response as ollama
from gateway.translate.common import Untranslatable, sse_payloads

# Ollama's docs' tool-calling example (/api/chat), with an answered call.
OLLAMA_TOOL_CHAT = {
    "model": "qwen3",
    "messages": [
        {"role": "user", "content": "What is the temperature in New York?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_temperature", "arguments": {"city": "New York"}}}
            ],
        },
        {"role": "tool", "tool_name": "get_temperature", "content": "22°C"},
    ],
    "stream": False,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_temperature",
                "description": "Get the current temperature for a city",
                "parameters": {
                    "type": "object",
                    "required": ["city"],
                    "properties": {"city": {"type": "string", "description": "The city"}},
                },
            },
        }
    ],
}


USER_HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("request_body", "path", "expected", "dropped"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            (),
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "what is this?", "images": ["iVBORw0K"]}],
                "options": {
                    "temperature": 0.2,
                    "top_p": 0.9,
                    "num_predict": 64,
                    "seed": 7,
                    "stop": ["\n\n"],
                    "num_ctx": 8192,
                },
                "format": "json",
                "stream": False,
                "keep_alive": "5m",
            },
            "/v1/chat/completions",
            {
                "model": "m",
                "stream": False,
                "temperature": 0.2,
                "top_p": 0.9,
                "max_tokens": 64,
                "seed": 7,
                "stop": ["\n\n"],
                "response_format": {"type": "json_object"},
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,iVBORw0K"},
                            },
                        ],
                    }
                ],
            },
            ("options.num_ctx", "keep_alive"),
        ),
        (
            {
                "model": "m",
                "messages": [USER_HI],
                "format": {"type": "object"},
                "options": {"num_predict": -1},
            },
            "/v1/chat/completions",
            {
                "model": "m",
                "stream": True,
                "messages": [USER_HI],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "format", "schema": {"type": "object"}},
                },
            },
            (),
        ),
    ],
)
def test_ollama_chat_requests(
    request_body: dict[str, Any], path: str, expected: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    translated = ollama_request.chat(request_body)
    assert (translated.path, translated.document, translated.dropped) == (path, expected, dropped)


def test_ollama_tool_calls_get_ids_that_their_answers_name() -> None:
    document = ollama_request.chat(OLLAMA_TOOL_CHAT).document
    assistant, tool = document["messages"][1], document["messages"][2]
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_temperature", "arguments": '{"city":"New York"}'},
        }
    ]
    assert tool == {"role": "tool", "content": "22°C", "tool_call_id": "call_1"}
    assert document["tools"] == OLLAMA_TOOL_CHAT["tools"]


@pytest.mark.parametrize(
    ("request_body", "path", "messages_or_prompt"),
    [
        (
            {"model": "m", "prompt": "Why is the sky blue?", "system": "Be brief."},
            "/v1/chat/completions",
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Why is the sky blue?"},
            ],
        ),
        ({"model": "m", "prompt": "def f(", "raw": True}, "/v1/completions", "def f("),
    ],
)
def test_ollama_generate_requests(
    request_body: dict[str, Any], path: str, messages_or_prompt: object
) -> None:
    translated = ollama_request.generate(request_body)
    assert translated.path == path
    key = "prompt" if path == "/v1/completions" else "messages"
    assert translated.document[key] == messages_or_prompt


HI: dict[str, Any] = {
    "model": "m",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.mark.parametrize(
    ("translate", "request_body", "field"),
    [
        (ollama_request.chat, {"model": "m", "messages": [], "format": "yaml"}, "format"),
        (ollama_request.chat, {"model": "m", "messages": "hi"}, "messages"),
        (ollama_request.chat, {"model": "m", "messages": [{"role": "king"}]}, "messages[0].role"),
        (ollama_request.generate, {"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
        # As Ollama: "raw mode does not support template, system, or context"
        (ollama_request.generate, {"prompt": "x", "raw": True, "system": "s"}, "raw"),
        (ollama_request.generate, {"prompt": "x", "raw": True, "template": "t"}, "raw"),
        (ollama_request.generate, {"prompt": "x", "raw": True, "context": [1, 2]}, "raw"),
        (ollama_request.generate, {"prompt": "x", "raw": True, "context": "1"}, "context"),
        (ollama_request.embed, {"model": "m", "input": 3}, "input"),
        (
            anthropic_request.messages,
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages[0].content[0].type",
        ),
        (
            anthropic_request.messages,
            {**HI, "tools": [{"type": "web_search_20250305", "name": "w"}]},
            "tools[0].type",
        ),
        (
            anthropic_request.messages,
            {**HI, "tool_choice": {"type": "sometimes"}},
            "tool_choice.type",
        ),
        # Anthropic's own checks, so that a chat completion never gets what it refuses.
        (anthropic_request.messages, {**HI, "messages": []}, "messages"),
        (anthropic_request.count_tokens, {**HI, "messages": []}, "messages"),
        (anthropic_request.messages, {"model": "m", "messages": HI["messages"]}, "max_tokens"),
        (anthropic_request.messages, {**HI, "max_tokens": 0}, "max_tokens"),
        (anthropic_request.messages, {**HI, "max_tokens": 2.5}, "max_tokens"),
        (anthropic_request.messages, {**HI, "max_tokens": "many"}, "max_tokens"),
        (anthropic_request.messages, {**HI, "max_tokens": True}, "max_tokens"),
        (anthropic_request.messages, {**HI, "temperature": "hot"}, "temperature"),
        (anthropic_request.messages, {**HI, "temperature": 1.5}, "temperature"),
        (anthropic_request.messages, {**HI, "temperature": math.nan}, "temperature"),
        (anthropic_request.messages, {**HI, "top_p": -0.1}, "top_p"),
        (anthropic_request.messages, {**HI, "top_k": -1}, "top_k"),
        (anthropic_request.messages, {**HI, "stream": "yes"}, "stream"),
        (
            anthropic_request.messages,
            {**HI, "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
            "messages[0].content[0].text",
        ),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_the_field(
    translate: Any, request_body: dict[str, Any], field: str
) -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(request_body)
    assert refused.value.param == field and refused.value.status_code == 400


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({**HI, "max_tokens": 16.0}, {"max_tokens": 16}),
        ({**HI, "temperature": 0, "top_p": 1}, {"max_tokens": 5, "temperature": 0, "top_p": 1}),
        ({**HI, "temperature": None, "top_k": 40}, {"max_tokens": 5}),
    ],
)
def test_anthropics_numbers_are_taken_as_anthropic_takes_them(
    request_body: dict[str, Any], expected: dict[str, Any]
) -> None:
    document = anthropic_request.messages(request_body).document
    names = ("max_tokens", "temperature", "top_p", "top_k")
    numbers = {name: document[name] for name in names if name in document}
    assert numbers == {"max_tokens": 5, **expected} and document["stream"] is False


TWO_TEXTS = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]


@pytest.mark.parametrize(
    ("request_body", "messages", "dropped"),
    [
        # Blocks stay parts (the backend's template joins them), not "Helloworld".
        (
            {**HI, "messages": [{"role": "user", "content": TWO_TEXTS}]},
            [{"role": "user", "content": TWO_TEXTS}],
            (),
        ),
        (
            {**HI, "messages": [{"role": "assistant", "content": TWO_TEXTS}]},
            [{"role": "assistant", "content": TWO_TEXTS}],
            (),
        ),
        (
            {**HI, "messages": [{"role": "user", "content": TWO_TEXTS[:1]}]},
            [{"role": "user", "content": "Hello"}],
            (),
        ),
        # A field not translated is named, whatever it is (Claude Code sends betas').
        (
            {**HI, "context_management": {"edits": []}, "top_k": 3, "thinking": {}},
            [{"role": "user", "content": "hi"}],
            ("context_management", "top_k", "thinking"),
        ),
    ],
)
def test_a_messages_request_says_what_it_said(
    request_body: dict[str, Any], messages: list[dict[str, Any]], dropped: tuple[str, ...]
) -> None:
    translated = anthropic_request.messages(request_body)
    assert translated.document["messages"] == messages
    assert translated.dropped == dropped


def test_count_tokens_names_what_it_does_not_count() -> None:
    body = {**HI, "tool_choice": {"type": "auto"}, "betas_field": 1}
    translated = anthropic_request.count_tokens(body)
    assert translated.dropped == ("max_tokens", "tool_choice", "betas_field")


# Anthropic's docs' tool use round trip, with an image and a cached system prompt.
ANTHROPIC_TOOL_TURN = {
    "model": "claude",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "stop_sequences": ["END"],
    "top_k": 5,
    "tools": [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
                {"type": "text", "text": "What's the weather like in San Francisco?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "15 degrees",
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
}


def test_an_anthropic_tool_turn_as_a_chat_completion() -> None:
    translated = anthropic_request.messages(ANTHROPIC_TOOL_TURN)
    assert translated.dropped == ("cache_control", "top_k")
    assert translated.document == {
        "model": "claude",
        "max_tokens": 1024,
        "stop": ["END"],
        "stream": False,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": ANTHROPIC_TOOL_TURN["tools"][0]["input_schema"],  # type: ignore[index]
                },
            }
        ],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "text", "text": "What's the weather like in San Francisco?"},
                ],
            },
            {
                "role": "assistant",
                "content": "I'll check.",
                "tool_calls": [
                    {
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"San Francisco, CA"}',
                        },
                    },
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                "content": "15 degrees",
            },
            {"role": "user", "content": "And tomorrow?"},
        ],
    }


# vLLM's answer to a chat with tools (its own fields included: stop_reason, ...).
VLLM_TOOL_ANSWER = {
    "id": "chatcmpl-8a1b",
    "object": "chat.completion",
    "created": 1733300000,
    "model": "Qwen/Qwen2.5-1.5B-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": None,
                "content": None,
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-9f",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "San Francisco, CA"}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 301, "total_tokens": 324, "completion_tokens": 23},
    "prompt_logprobs": None,
}


@pytest.mark.parametrize(
    ("choice", "stops", "reason", "sequence"),
    [
        ({"finish_reason": "stop", "stop_reason": None}, (), "end_turn", None),
        ({"finish_reason": "stop", "stop_reason": "END"}, ("END",), "stop_sequence", "END"),
        ({"finish_reason": "stop", "stop_reason": 151645}, ("END",), "end_turn", None),
        ({"finish_reason": "length"}, (), "max_tokens", None),
        ({"finish_reason": "tool_calls"}, (), "tool_use", None),
    ],
)
def test_stop_reasons(
    choice: dict[str, Any], stops: tuple[str, ...], reason: str, sequence: str | None
) -> None:
    document = {"choices": [{"message": {"content": "x"}, **choice}], "usage": {}}
    message = anthropic_response.message_answer(document, "m", "msg_1", stops)
    assert (message["stop_reason"], message["stop_sequence"]) == (reason, sequence)


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "tool_use"), ("tool_calls", "tool_use"), ("length", "max_tokens")],
)
def test_an_answer_that_calls_a_tool_stops_for_it(finish: str, reason: str) -> None:
    """vLLM says `stop` for a named tool it was told to call; Claude Code runs tools on
    `tool_use` alone."""
    choice = VLLM_TOOL_ANSWER["choices"][0]  # type: ignore[index]
    document = {**VLLM_TOOL_ANSWER, "choices": [{**choice, "finish_reason": finish}]}
    assert anthropic_response.message_answer(document, "m", "msg_1")["stop_reason"] == reason
    stream = anthropic_response.AnthropicStream("m", "msg_1")
    events = [*VLLM_STREAM[2:5], _delta({}, finish), "[DONE]"]
    last = [json.loads(p) for p in sse_payloads(stream.feed(_sse(*events)))][-2]
    assert last["delta"]["stop_reason"] == reason


def test_a_vllm_tool_answer_as_anthropic_and_as_ollama() -> None:
    message = anthropic_response.message_answer(VLLM_TOOL_ANSWER, "claude", "msg_1")
    assert message["content"] == [
        {
            "type": "tool_use",
            "id": "chatcmpl-tool-9f",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        }
    ]
    assert message["usage"] == {"input_tokens": 301, "output_tokens": 23}
    timings = ollama.Timings(started=10.0, first_token=10.5, now=12.0)
    answer = ollama.chat_answer(VLLM_TOOL_ANSWER, "qwen3", timings, 1733300000.0)
    assert answer["message"]["tool_calls"] == [
        {
            "function": {
                "index": 0,
                "name": "get_weather",
                "arguments": {"location": "San Francisco, CA"},
            }
        }
    ]
    assert answer["done_reason"] == "stop" and answer["created_at"] == "2024-12-04T08:13:20Z"
    assert (answer["total_duration"], answer["prompt_eval_duration"], answer["eval_duration"]) == (
        2_000_000_000,
        500_000_000,
        1_500_000_000,
    )
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (301, 23)


def _sse(*chunks: object) -> bytes:
    return b"".join(
        b"data: " + (c.encode() if isinstance(c, str) else json.dumps(c).encode()) + b"\n\n"
        for c in chunks
    )


def _delta(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
    }


VLLM_STREAM = [
    _delta({"role": "assistant", "content": ""}),
    _delta({"content": "Let me check"}),
    _delta(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"location": '}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _delta({}, "tool_calls", stop_reason=None),
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    "[DONE]",
]


def test_a_chat_stream_as_anthropics_event_sequence() -> None:
    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    # Fed in two runs, as the relay hands over whatever whole events arrived.
    out = stream.feed(_sse(*VLLM_STREAM[:3])) + stream.feed(_sse(*VLLM_STREAM[3:]))
    out += stream.close(None)
    names = [line[7:] for line in out.decode().split("\n") if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",  # (one: the call is written whole, its arguments checked)
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = [json.loads(p) for p in sse_payloads(out)]
    assert events[4]["content_block"] == {
        "type": "tool_use",
        "id": "call_9",
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(
        e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"location": "Paris"}
    assert events[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 12, "output_tokens": 9},
    }


def test_a_broken_stream_ends_in_each_apis_error_shape() -> None:
    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    stream.feed(_sse(VLLM_STREAM[1]))
    end = stream.close("the backend failed mid-stream: reset")
    assert end.startswith(b"event: error\n")
    assert json.loads(sse_payloads(end)[0])["error"]["type"] == "api_error"
    lines = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0)
    lines.feed(_sse(VLLM_STREAM[1]), 1.0)
    assert json.loads(lines.close("cut", 2.0)) == {"error": "cut"}


def test_a_stream_ended_with_neither_finish_nor_done_was_cut_short() -> None:
    # The backend closed its answer cleanly after two texts: not a finished answer.
    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    stream.feed(_sse(*VLLM_STREAM[:2]))
    end = stream.close(None)
    assert end.startswith(b"event: error\n") and b"message_stop" not in end
    assert "ended before its answer did" in json.loads(sse_payloads(end)[0])["error"]["message"]
    lines = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0)
    lines.feed(_sse(*VLLM_STREAM[:2]), 1.0)
    assert "ended before its answer did" in json.loads(lines.close(None, 2.0))["error"]
    # After its finish (no [DONE], no usage), the answer is whole.
    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    stream.feed(_sse(VLLM_STREAM[1], _delta({}, "stop")))
    assert stream.close(None).endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    lines = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0)
    lines.feed(_sse(VLLM_STREAM[1], _delta({}, "stop")), 1.0)
    assert json.loads(lines.close(None, 2.0))["done_reason"] == "stop"


def test_nothing_follows_a_streams_end() -> None:
    # The backend broke (or erred again) after its [DONE], or after its error chunk.
    error = {"error": {"message": "overloaded", "type": "server_error", "code": 503}}
    for tail in ("[DONE]", error):
        lines = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0)
        lines.feed(_sse(VLLM_STREAM[1], _delta({}, "stop"), tail), 1.0)
        assert lines.done and lines.close("the backend failed mid-stream: reset", 2.0) == b""
        stream = anthropic_response.AnthropicStream("claude", "msg_1")
        stream.feed(_sse(VLLM_STREAM[1], _delta({}, "stop"), tail))
        assert stream.done and stream.close("the backend failed mid-stream: reset") == b""


def test_a_chat_stream_as_ollamas_ndjson() -> None:
    stream = ollama.OllamaStream("qwen3", chat=True, started=100.0, epoch=1733300000.0)
    out = stream.feed(_sse(*VLLM_STREAM[:2]), 100.25) + stream.feed(_sse(*VLLM_STREAM[2:]), 101.0)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["done"] for r in records] == [False, False, True]
    assert records[0]["message"] == {"role": "assistant", "content": "Let me check"}
    assert records[1]["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "get_weather", "arguments": {"location": "Paris"}}}
    ]
    final = records[2]
    assert final["done_reason"] == "stop" and final["eval_count"] == 9
    assert (final["total_duration"], final["prompt_eval_duration"], final["eval_duration"]) == (
        1_000_000_000,
        250_000_000,
        750_000_000,
    )
    assert stream.close(None, 102.0) == b""  # the final record was sent once


def test_embeddings_and_token_counts() -> None:
    answer = {
        "object": "list",
        "model": "m",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.3]},
            {"object": "embedding", "index": 0, "embedding": [0.1]},
        ],
    }
    timings = ollama.Timings(0.0, None, 0.5)
    assert ollama.embed_answer(answer, "m", timings, 0.0)["embeddings"] == [[0.1], [0.3]]
    assert ollama.embeddings_answer(answer, "m", timings, 0.0) == {"embedding": [0.1]}
    assert anthropic_response.count_answer(
        {"count": 17, "max_model_len": 4096, "tokens": [1] * 17}
    ) == {"input_tokens": 17}


@pytest.mark.parametrize(
    ("names", "header"),
    [
        (("options.num_ctx", "keep_alive"), b"options.num_ctx, keep_alive"),
        (("options.a\r\nx-evil: 1",), b'"options.a\\r\\nx-evil: 1"'),
        (("options.é",), b'"options.\\u00e9"'),
        (tuple(f"options.o{i}" for i in range(22)), None),
    ],
)
def test_the_dropped_header_names_what_was_dropped_and_nothing_else(
    names: tuple[str, ...], header: bytes | None
) -> None:
    value = dropped_header(names)
    assert value.isascii() and b"\r" not in value and b"\n" not in value
    if header is not None:
        assert value == header
    else:
        assert value.endswith(b"options.o19, and 2 more")


def test_a_whole_message_as_the_stream_that_builds_it() -> None:
    message = anthropic_response.message_answer(
        {
            "choices": [
                {
                    "message": {
                        "content": "Let me check",
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "function": {"name": "w", "arguments": '{"city": "Paris"}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9},
        },
        "claude",
        "msg_1",
    )
    events = [json.loads(p) for p in sse_payloads(anthropic_response.message_events(message))]
    assert [e["type"] for e in events] == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_stop"] * 2,
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert events[2]["delta"] == {"type": "text_delta", "text": "Let me check"}
    assert events[4]["content_block"] == {
        "type": "tool_use",
        "id": "call_9",
        "name": "w",
        "input": {},
    }
    assert json.loads(events[5]["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"] == {"input_tokens": 12, "output_tokens": 9}


def test_a_streamed_tool_call_is_written_whole_and_checked() -> None:
    """From reviews: a model's pieces of arguments with NaN reached Anthropic's SDK as
    input {'x': nan} (its parser reads NaN); pieces of two calls interleaved wrote a
    delta into a block already stopped."""

    def call(index: int, arguments: str, name: str = "") -> dict[str, Any]:
        piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if name:
            piece.update(id=f"call_{index}", type="function")
            piece["function"]["name"] = name
        return _delta({"tool_calls": [piece]})

    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    out = stream.feed(
        _sse(
            call(0, '{"x": ', "a"),
            call(1, '{"y": NaN}', "b"),
            call(0, "1}"),
            _delta({}, "tool_calls"),
            "[DONE]",
        )
    )
    events = [json.loads(p) for p in sse_payloads(out)]
    blocks = [e for e in events if e["type"] == "content_block_start"]
    assert [(b["index"], b["content_block"]["name"]) for b in blocks] == [(0, "a"), (1, "b")]
    deltas = [e for e in events if e["type"] == "content_block_delta"]
    assert [(d["index"], d["delta"]["partial_json"]) for d in deltas] == [(0, '{"x":1}')]
    opened: set[int] = set()
    for event in events:  # every delta inside its open block
        if event["type"] == "content_block_start":
            opened.add(event["index"])
        elif event["type"] == "content_block_stop":
            opened.discard(event["index"])
        elif event["type"] == "content_block_delta":
            assert event["index"] in opened


def test_a_tool_calls_name_repeated_in_its_pieces_is_its_name() -> None:
    # Some backends repeat the name in each piece of a call (from a review: joined, the
    # SDK got "get_weatherget_weather").
    def piece(arguments: str) -> dict[str, Any]:
        call = {"index": 0, "id": "call_1", "function": {"name": "w", "arguments": arguments}}
        return _delta({"tool_calls": [call]})

    events = _sse(piece('{"a":'), piece("1}"), _delta({}, "tool_calls"), "[DONE]")
    stream = anthropic_response.AnthropicStream("claude", "msg_1")
    starts = [
        json.loads(p) for p in sse_payloads(stream.feed(events)) if "content_block_start" in p
    ]
    assert starts[0]["content_block"]["name"] == "w"
    lines = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0).feed(events, 1.0)
    calls = json.loads(lines.splitlines()[0])["message"]["tool_calls"]
    assert calls[0]["function"]["name"] == "w" and calls[0]["function"]["arguments"] == {"a": 1}
