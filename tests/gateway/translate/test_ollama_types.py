"""The top-level fields of Ollama's requests, typed as its Go structs type them
(`api.ChatRequest`, `api.Message`, `api.GenerateRequest`, `api.EmbedRequest`): a
value Go would refuse to unmarshal is the client's 400 naming the field, not taken
silently (`"stream": "no"` streamed, `"images": "abc"` left out) nor passed on for
the backend to refuse. null is absent, as for Go's decoder."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.translate import ollama_request
from gateway.translate.common import Untranslatable

chat, generate = ollama_request.chat, ollama_request.generate
embed, embeddings = ollama_request.embed, ollama_request.embeddings
USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("translate", "body", "message"),
    [
        (chat, {"messages": [{**USER, "images": "abc"}]}, "messages[0].images"),
        (chat, {"messages": [USER, {**USER, "images": ["a", 1]}]}, "messages[1].images"),
        (chat, {"messages": [{**USER, "images": {"a": 1}}]}, "messages[0].images"),
        (generate, {"prompt": "x", "images": "abc"}, "images"),
        (generate, {"prompt": "x", "images": [None]}, "images"),
    ],
)
def test_images_must_be_a_list_of_strings(
    translate: Any, body: dict[str, Any], message: str
) -> None:
    refused(translate, body, message, "must be a list of strings")


@pytest.mark.parametrize(
    ("translate", "body", "field", "why"),
    [
        (chat, {"messages": [], "stream": "no"}, "stream", "must be true or false"),
        (chat, {"messages": [], "stream": 0}, "stream", "must be true or false"),
        (generate, {"prompt": "x", "stream": "false"}, "stream", "must be true or false"),
        (generate, {"prompt": "x", "raw": "true"}, "raw", "must be true or false"),
        (generate, {"prompt": "x", "raw": 1}, "raw", "must be true or false"),
        (generate, {"prompt": 3}, "prompt", "must be a string"),
        (generate, {"prompt": ["x"]}, "prompt", "must be a string"),
        (generate, {"prompt": "x", "system": 1}, "system", "must be a string"),
        (generate, {"prompt": "x", "suffix": []}, "suffix", "must be a string"),
        (generate, {"prompt": "x", "suffix": 5, "raw": True}, "suffix", "must be a string"),
        (chat, {"messages": [{"role": ["user"]}]}, "messages[0].role", "must be a string"),
        (
            chat,
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "must be a string",
        ),
        (
            chat,
            {"messages": [{"role": "assistant", "tool_calls": {"function": {"name": "f"}}}]},
            "messages[0].tool_calls",
            "must be a list",
        ),
        (
            chat,
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "must be an object",
        ),
        (embed, {"input": 3}, "input", "must be a string or a list of strings"),
        (embed, {"input": None}, "input", "must be a string or a list of strings"),
        (embed, {"input": ["a", 2]}, "input", "must be a list of strings"),
        (embed, {"input": "a", "dimensions": "8"}, "dimensions", "must be an integer"),
        (embed, {"input": "a", "dimensions": 8.0}, "dimensions", "must be an integer"),
        (embed, {"input": "a", "dimensions": True}, "dimensions", "must be an integer"),
        (embed, {"input": "a", "dimensions": 2**63}, "dimensions", "must be an integer"),
        (embed, {"input": "a", "options": {"num_ctx": "big"}}, "options.num_ctx", None),
        (embeddings, {"prompt": ["a"]}, "prompt", "must be a string"),
    ],
)
def test_a_field_go_would_not_unmarshal_is_a_400_naming_it(
    translate: Any, body: dict[str, Any], field: str, why: str | None
) -> None:
    refused(translate, body, field, why)


def refused(translate: Any, body: dict[str, Any], field: str, why: str | None) -> None:
    with pytest.raises(Untranslatable) as refusal:
        translate({"model": "m", **body})
    assert refusal.value.param == field and refusal.value.status_code == 400
    assert why is None or str(refusal.value) == f"{field}: {why}"


USER_X = {"role": "user", "content": "x"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}


@pytest.mark.parametrize(
    ("translate", "body", "expected"),
    [
        # null is absent
        (chat, {"messages": [{**USER, "images": None}]}, {"messages": [USER]}),
        (
            chat,
            {"messages": [{"role": "user", "content": None}]},
            {"messages": [{"role": "user", "content": ""}]},
        ),
        (chat, {"messages": [], "stream": None}, {"stream": True}),
        (chat, {"messages": [{"role": "User", "content": "hi"}]}, {"messages": [USER]}),
        (chat, {"messages": [], "stream": False}, {"stream": False}),
        (
            chat,
            {"messages": [{**USER, "images": ["iVBO"]}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}]},
        ),
        (generate, {"prompt": "x", "context": None}, {"messages": [USER_X]}),
        (
            generate,
            {"prompt": "x", "images": None, "system": None, "suffix": None},
            {"messages": [{"role": "user", "content": "x"}]},
        ),
        (generate, {"prompt": "x", "images": []}, {"messages": [{"role": "user", "content": "x"}]}),
        (generate, {"prompt": "x", "raw": None}, {"messages": [{"role": "user", "content": "x"}]}),
        (generate, {"prompt": "x", "raw": False}, {"messages": [{"role": "user", "content": "x"}]}),
        (generate, {"prompt": "x", "raw": True, "suffix": ""}, {"prompt": "x"}),
        (embed, {"input": ["a", "b"], "dimensions": 8}, {"input": ["a", "b"], "dimensions": 8}),
        (embed, {"input": "a", "dimensions": None}, {"input": "a"}),
        # Ollama cuts an embedding only when dimensions > 0: 0 or below is all of it
        (embed, {"input": "a", "dimensions": 0}, {"input": "a"}),
        (embed, {"input": "a", "dimensions": -3}, {"input": "a"}),
        (embeddings, {"prompt": "a", "dimensions": 4}, {"input": "a", "dimensions": 4}),
    ],
)
def test_fields_of_their_type_or_null_translate(
    translate: Any, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    document = translate({"model": "m", **body}).document
    assert {name: document.get(name) for name in expected} == expected
    assert document.get("dimensions") == expected.get("dimensions")


@pytest.mark.parametrize(
    ("translate", "body", "answered"),
    [
        # Nothing to answer: Ollama loads the model (keep_alive 0: unloads it) and says so.
        (chat, {"messages": None}, "load"),  # (null is none)
        (chat, {"messages": []}, "load"),
        (chat, {"messages": [], "keep_alive": 0}, "unload"),
        (chat, {"messages": [], "keep_alive": "0s"}, "unload"),
        (chat, {"messages": [], "keep_alive": "0m0s"}, "unload"),
        (chat, {"messages": [], "keep_alive": "-0"}, "unload"),  # (Go's ParseDuration: 0)
        (chat, {"messages": [], "keep_alive": "+0s"}, "unload"),
        (chat, {"messages": [], "keep_alive": "-1"}, "load"),
        (chat, {"messages": [], "keep_alive": "5m"}, "load"),
        (chat, {"messages": [], "keep_alive": -1}, "load"),
        (generate, {}, "load"),
        (generate, {"prompt": None, "images": ["iVBO"]}, "load"),
        (generate, {"prompt": "", "keep_alive": "0"}, "unload"),
        (generate, {"prompt": "", "keep_alive": 0.0}, "unload"),
        (generate, {"prompt": "", "raw": True, "system": "s", "keep_alive": 0}, "unload"),
        (chat, {"messages": [USER]}, None),
        (generate, {"prompt": "x"}, None),
        (generate, {"prompt": "x", "keep_alive": 0}, None),
    ],
)
def test_a_request_with_nothing_to_answer_loads_the_model(
    translate: Any, body: dict[str, Any], answered: str | None
) -> None:
    """From a review: these were sent to the backend as an empty chat, which generated."""
    assert translate({"model": "m", **body}).answered == answered
