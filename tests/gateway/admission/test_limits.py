"""Client limits, pure: validation (400 naming the field), merging, models a key may use."""

from __future__ import annotations

import pytest

from gateway.admission.limits import (
    LimitError,
    Limits,
    allowed_models,
    effective_limits,
    validate_limits,
)
from gateway.proxy.bodies import requested_tokens


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "limits"),
        ({"requests_per_minute": -1}, "limits.requests_per_minute"),
        ({"tokens_per_minute": 100}, "limits.tokens_per_minute"),  # below one reservation
        ({"tokens_per_day": 1023}, "limits.tokens_per_day"),
        ({"tokens_per_minute": 1.5}, "limits.tokens_per_minute"),
        ({"max_concurrent": True}, "limits.max_concurrent"),
        ({"priority": 0}, "limits.priority"),
        ({"priority": 101}, "limits.priority"),
        ({"requests_per_hour": 5}, "limits.requests_per_hour"),
    ],
)
def test_limits_that_make_no_sense_name_their_field(raw: object, field: str) -> None:
    with pytest.raises(LimitError) as refused:
        validate_limits(raw, reservation=1024)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ({"tokens_per_minute": 0}, {"tokens_per_minute": 0}),  # 0: no limit
        ({"tokens_per_minute": 1024, "priority": 5}, {"tokens_per_minute": 1024, "priority": 5}),
        ({"requests_per_minute": None}, {}),  # null: inherit
    ],
)
def test_valid_limits(raw: object, expected: dict[str, int]) -> None:
    assert validate_limits(raw, reservation=1024) == expected


def test_key_over_group_over_default() -> None:
    defaults = Limits(requests_per_minute=60, tokens_per_day=100_000)
    merged = effective_limits(
        {"requests_per_minute": 10}, {"requests_per_minute": 30, "max_concurrent": 2}, defaults
    )
    assert merged == Limits(
        requests_per_minute=10, tokens_per_day=100_000, max_concurrent=2, priority=1
    )
    assert effective_limits(None, None, defaults) == defaults


@pytest.mark.parametrize(
    ("key", "group", "expected"),
    [
        (None, None, None),
        (None, ["a", "b"], {"a", "b"}),
        (["a"], None, {"a"}),
        (["a", "c"], ["a", "b"], {"a"}),  # a key never reaches past its group
    ],
)
def test_models_a_key_may_use(
    key: list[str] | None, group: list[str] | None, expected: set[str] | None
) -> None:
    allowed = allowed_models(key, group)
    assert (None if allowed is None else set(allowed)) == expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"model": "m"}, None),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70}, 70),
        ({"max_output_tokens": 90}, 90),  # Responses
        ({"options": {"num_predict": 30}}, 30),  # Ollama
        ({"max_tokens": 50, "n": 3}, 150),
        ({"max_tokens": "50"}, None),
        ({"max_tokens": -1}, None),
        ({"max_tokens": True}, None),
    ],
)
def test_requested_tokens(document: dict[str, object], expected: int | None) -> None:
    assert requested_tokens(document) == expected


def test_a_ring_remembers_the_keys_it_found_and_only_those() -> None:
    """KeyRing.find keeps a found key by value (no hash per request), never an unknown
    one (anyone can send those), and within FOUND_KEYS."""
    from gateway.admission import keyring
    from gateway.admission.key_format import key_hash

    client = keyring.Client(
        key_id="k1",
        name="n",
        owner=None,
        group=None,
        prefix="mvk_abcd",
        limits=Limits(),
        models=None,
    )
    ring = keyring.KeyRing(1, {key_hash("mvk_secret"): client})
    assert ring.find("mvk_secret") is client and ring.find("mvk_secret") is client
    assert ring.find("mvk_unknown") is None
    assert list(ring.found) == ["mvk_secret"]
    assert "mvk_secret" not in repr(ring)
    many = {key_hash(f"mvk_{index}"): client for index in range(keyring.FOUND_KEYS + 10)}
    big = keyring.KeyRing(1, many)
    for index in range(keyring.FOUND_KEYS + 10):
        assert big.find(f"mvk_{index}") is client
    assert len(big.found) <= keyring.FOUND_KEYS
