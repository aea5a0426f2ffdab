"""The affinity key of a request, as a table: which fields form it, and which do not."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing.prefix_key import affinity_key, hint_for

SYSTEM = {"role": "system", "content": "You are a pirate."}
FIRST = {"role": "user", "content": "Where is the treasure?"}
ANSWER = {"role": "assistant", "content": "Under the palm tree."}
SECOND = {"role": "user", "content": "Which one?"}


def key(document: dict[str, Any], session: str | None = None) -> bytes | None:
    return affinity_key(document, session)


def test_every_turn_of_a_chat_has_its_first_turns_key() -> None:
    first = key({"model": "m", "messages": [SYSTEM, FIRST]})
    later = key({"model": "m", "messages": [SYSTEM, FIRST, ANSWER, SECOND], "max_tokens": 9})
    assert first is not None and first == later


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # Another first question, the same system prompt: another conversation.
        ({"messages": [SYSTEM, FIRST]}, {"messages": [SYSTEM, SECOND]}),
        ({"messages": [SYSTEM, FIRST]}, {"messages": [{"role": "system", "content": "x"}, FIRST]}),
        ({"prompt": "Once upon a time"}, {"prompt": "Twice upon a time"}),
        ({"user": "alice", "messages": [FIRST]}, {"user": "bob", "messages": [FIRST]}),
        # Anthropic's system prompt is part of it.
        ({"system": "a", "messages": [FIRST]}, {"system": "b", "messages": [FIRST]}),
        ({"instructions": "a", "input": "hi"}, {"instructions": "b", "input": "hi"}),
    ],
)
def test_different_conversations_have_different_keys(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    assert key(one) != key(other)


@pytest.mark.parametrize(
    ("one", "other", "session"),
    [
        # The session header wins over everything in the body.
        ({"messages": [FIRST]}, {"messages": [SECOND], "user": "x"}, "s-1"),
        # `user` wins over the messages.
        ({"user": "alice", "messages": [FIRST]}, {"user": "alice", "messages": [SECOND]}, None),
        # Only the leading messages count: the rest of the prompt and the options do not.
        ({"prompt": "a" * 5000 + "x"}, {"prompt": "a" * 5000 + "y"}, None),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            {"messages": [{"role": "user", "content": [{"text": "hi", "type": "text"}]}, ANSWER]},
            None,
        ),
    ],
)
def test_same_key(one: dict[str, Any], other: dict[str, Any], session: str | None) -> None:
    assert key(one, session) == key(other, session) is not None


@pytest.mark.parametrize(
    "document",
    [{}, {"model": "m"}, {"messages": "not a list"}, {"messages": [3]}, {"user": ""}, {"input": 5}],
)
def test_no_key(document: dict[str, Any]) -> None:
    assert key(document) is None


def test_the_hint_guesses_the_prompt_size_from_the_body() -> None:
    hint = hint_for({"messages": [FIRST]}, None, 4000)
    assert hint.prompt_tokens == 1000 and hint.affinity == key({"messages": [FIRST]})
    assert hint_for(None, None, 10).affinity is None


def test_the_key_is_the_same_in_every_version() -> None:
    """Instances of two versions side by side (a rolling upgrade) must send a conversation
    to the same server: a change to how the key is made (here made faster, once) must
    leave its value as it was."""
    document = {
        "system": "You are a pirate.",
        "messages": [
            {"role": "system", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ANSWER,
        ],
    }
    found = key(document)
    assert found is not None and found.hex() == "d9985249f7934a2ac4f5cc9636b8dbec"
