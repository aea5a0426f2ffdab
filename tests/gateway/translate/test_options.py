"""Ollama's options in OpenAI's names, typed as Ollama types them (`api.Options.FromMap`):
a value of the wrong type is the client's 400 naming the option, as Ollama answers, not
passed on for the backend to refuse in the name of an OpenAI field the client never
wrote (from a new user's trial: num_predict "abc" came back as a max_tokens error)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.translate import ollama_request
from gateway.translate.common import Untranslatable


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ({"num_predict": 5}, {"max_tokens": 5}),
        ({"num_predict": 5.9}, {"max_tokens": 5}),  # (Go's conversion: toward zero)
        ({"num_predict": -1}, {}),  # until done: OpenAI's default
        ({"num_predict": -2.0}, {}),
        ({"num_predict": None}, {}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5, "top_p": 1}),
        ({"seed": 7.0}, {"seed": 7}),
        ({"stop": ["\n", "END"]}, {"stop": ["\n", "END"]}),
        ({"stop": []}, {"stop": []}),
    ],
)
def test_options_as_openai_fields(options: dict[str, Any], sent: dict[str, Any]) -> None:
    document = ollama_request.chat({"model": "m", "messages": [], "options": options}).document
    names = ("max_tokens", "temperature", "top_p", "seed", "stop")
    assert {name: document[name] for name in names if name in document} == sent


@pytest.mark.parametrize(
    ("options", "param", "why"),
    [
        ({"num_predict": "abc"}, "options.num_predict", "must be of type integer"),
        ({"num_predict": True}, "options.num_predict", "must be of type integer"),
        ({"num_predict": 1e300}, "options.num_predict", "must be of type integer"),
        ({"seed": [1]}, "options.seed", "must be of type integer"),
        ({"temperature": "hot"}, "options.temperature", "must be of type float"),
        ({"top_p": False}, "options.top_p", "must be of type float"),
        ({"stop": "END"}, "options.stop", "must be of type array"),
        ({"stop": ["END", 3]}, "options.stop", "must be of type array"),
    ],
)
def test_an_option_of_the_wrong_type_is_a_400_naming_it(
    options: dict[str, Any], param: str, why: str
) -> None:
    for translate, field in (
        (ollama_request.chat, "messages"),
        (ollama_request.generate, "prompt"),
    ):
        with pytest.raises(Untranslatable) as refused:
            translate({"model": "m", field: [] if field == "messages" else "x", "options": options})
        assert refused.value.param == param and why in str(refused.value)
