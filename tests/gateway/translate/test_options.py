"""Ollama's options in OpenAI's names, typed as Ollama types them (`api.Options.FromMap`):
a value of the wrong type is the client's 400 naming the option, in Ollama's words, not
passed on for the backend to refuse in the name of an OpenAI field the client never
wrote (from a new user's trial: num_predict "abc" came back as a max_tokens error)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.translate import ollama_request
from gateway.translate.common import Untranslatable

SENT = ("max_tokens", "temperature", "top_p", "seed", "stop")


def sent(options: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    translated = ollama_request.chat({"model": "m", "messages": [], "options": options})
    document = translated.document
    return {name: document[name] for name in SENT if name in document}, translated.dropped


@pytest.mark.parametrize(
    ("options", "openai"),
    [
        ({"num_predict": 5}, {"max_tokens": 5}),
        ({"num_predict": 5.9}, {"max_tokens": 5}),  # (Go's conversion: toward zero)
        ({"num_predict": -1}, {}),  # until done: OpenAI's default
        ({"num_predict": -2.0}, {}),
        ({"num_predict": None}, {}),
        # Ollama limits only when num_predict > 0: 0, and what is 0 made whole, is none
        ({"num_predict": 0}, {}),
        ({"num_predict": 0.9}, {}),
        ({"num_predict": -0.5}, {}),
        ({"num_predict": 2**63 - 1}, {"max_tokens": 2**63 - 1}),
        ({"num_predict": -(2**63)}, {}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5, "top_p": 1}),
        ({"seed": 7.0}, {"seed": 7}),
        ({"stop": ["\n", "END"]}, {"stop": ["\n", "END"]}),
        ({"stop": []}, {"stop": []}),
    ],
)
def test_options_as_openai_fields(options: dict[str, Any], openai: dict[str, Any]) -> None:
    assert sent(options) == (openai, ())


@pytest.mark.parametrize(
    ("options", "dropped"),
    [
        (
            {"num_ctx": 8192, "top_k": 40, "min_p": 0.05},
            ("options.num_ctx", "options.top_k", "options.min_p"),
        ),
        (
            {"num_ctx": 8192.7, "use_mmap": False, "num_thread": None},
            ("options.num_ctx", "options.use_mmap"),
        ),
        (
            {"repeat_penalty": 1, "typical_p": 1.0, "repeat_last_n": -1},
            ("options.repeat_penalty", "options.typical_p", "options.repeat_last_n"),
        ),
        (
            {"num_keep": 4, "num_batch": 512, "num_gpu": -1, "main_gpu": 0},
            ("options.num_keep", "options.num_batch", "options.num_gpu", "options.main_gpu"),
        ),
        # Unknown to Ollama (it warns and ignores them): dropped as they are, untyped.
        ({"mirostat": "x", "tfs_z": [1]}, ("options.mirostat", "options.tfs_z")),
    ],
)
def test_options_openai_has_not_are_typed_then_dropped(
    options: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    assert sent(options) == ({}, dropped)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"num_predict": "abc"},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        (
            {"num_predict": True},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        ({"seed": [1]}, 'options.seed: option "seed" must be of type integer'),
        (
            {"temperature": "hot"},
            'options.temperature: option "temperature" must be of type float32',
        ),
        ({"top_p": False}, 'options.top_p: option "top_p" must be of type float32'),
        ({"stop": "END"}, 'options.stop: option "stop" must be of type array'),
        ({"stop": ["END", 3]}, 'options.stop: option "stop" must be of an array of strings'),
        # outside int64, as a float or as an integer: Go would make either meaningless
        (
            {"num_predict": 1e300},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        (
            {"num_predict": 10**30},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        (
            {"num_predict": 2**63},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        ({"seed": -(2**63) - 1}, 'options.seed: option "seed" must be of type integer'),
        (
            {"num_predict": 2.0**63},
            'options.num_predict: option "num_predict" must be of type integer',
        ),
        # NaN and the infinities, which Ollama's JSON decoder refuses
        (
            {"temperature": float("nan")},
            'options.temperature: option "temperature" must be a finite number',
        ),
        (
            {"num_predict": float("inf")},
            'options.num_predict: option "num_predict" must be a finite number',
        ),
        ({"num_ctx": float("-inf")}, 'options.num_ctx: option "num_ctx" must be a finite number'),
        ({"mirostat": float("nan")}, 'options.mirostat: option "mirostat" must be a finite number'),
        ({"top_p": 10**400}, 'options.top_p: option "top_p" must be a finite number'),
        # options OpenAI has not: typed before they are dropped, as Ollama types them
        ({"num_ctx": "big"}, 'options.num_ctx: option "num_ctx" must be of type integer'),
        ({"num_ctx": 10**30}, 'options.num_ctx: option "num_ctx" must be of type integer'),
        ({"top_k": None, "min_p": "low"}, 'options.min_p: option "min_p" must be of type float32'),
        ({"use_mmap": "yes"}, 'options.use_mmap: option "use_mmap" must be of type boolean'),
        ({"use_mmap": 1}, 'options.use_mmap: option "use_mmap" must be of type boolean'),
        ({"num_gpu": False}, 'options.num_gpu: option "num_gpu" must be of type integer'),
    ],
)
def test_an_option_of_the_wrong_type_is_a_400_naming_it(
    options: dict[str, Any], message: str
) -> None:
    for translate, body in (
        (ollama_request.chat, {"messages": []}),
        (ollama_request.generate, {"prompt": "x"}),
        (ollama_request.embed, {"input": "x"}),
    ):
        with pytest.raises(Untranslatable) as refused:
            translate({"model": "m", "options": options, **body})
        assert (refused.value.param, str(refused.value)) == (message.split(":")[0], message)
        assert refused.value.status_code == 400
