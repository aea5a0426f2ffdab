"""Routing policy as tables: eligibility, tiers, slow start, each strategy."""

from __future__ import annotations

import pytest

from gateway.routing.balancer import Balancer
from gateway.routing.policy import (
    Backend,
    Draws,
    Load,
    best_tier,
    choose,
    eligible,
    explain_no_backend,
    moving_average,
    parse_tags,
    slow_start_share,
)

A = Backend("a", "m", "http://a")
B = Backend("b", "m", "http://b")
C = Backend("c", "m", "http://c")


def backend(id: str, **fields: object) -> Backend:
    return Backend(id, "m", f"http://{id}", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "tags"),
    [(None, set()), ("", set()), ("gpu", {"gpu"}), (" GPU , vision,,", {"gpu", "vision"})],
)
def test_parse_tags(header: str | None, tags: set[str]) -> None:
    assert parse_tags(header) == tags


@pytest.mark.parametrize(
    ("backends", "kwargs", "expected"),
    [
        ([A, B], {}, ["a", "b"]),
        ([A, backend("b", healthy=False)], {}, ["a"]),
        ([backend("a", tags=frozenset({"gpu"})), B], {"required_tags": frozenset({"gpu"})}, ["a"]),
        (
            [backend("a", tags=frozenset({"gpu"})), B],
            {"required_tags": frozenset({"gpu", "vision"})},
            [],
        ),
        ([A, B], {"exclude": frozenset({"a"})}, ["b"]),
        ([backend("a", max_concurrent=2), B], {"loads": {"a": Load(in_flight=2)}}, ["b"]),
        ([backend("a", max_concurrent=2), B], {"loads": {"a": Load(in_flight=1)}}, ["a", "b"]),
        ([backend("a", streaming=False), B], {"streaming": True}, ["b"]),
        ([backend("a", streaming=False), B], {"streaming": False}, ["a", "b"]),
    ],
)
def test_eligible(backends: list[Backend], kwargs: dict[str, object], expected: list[str]) -> None:
    assert [b.registration_id for b in eligible(backends, **kwargs)] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("priorities", "expected"),
    [([], []), ([0, 0], ["a", "b"]), ([1, 0, 0], ["b", "c"]), ([2, 1, 3], ["b"])],
)
def test_best_tier(priorities: list[int], expected: list[str]) -> None:
    backends = [backend(i, priority=p) for i, p in zip("abc", priorities, strict=False)]
    assert [b.registration_id for b in best_tier(backends)] == expected


@pytest.mark.parametrize(
    ("since", "now", "window", "share"),
    [
        (None, 100.0, 30.0, 1.0),
        (100.0, 100.0, 0.0, 1.0),
        (100.0, 100.0, 30.0, 0.1),
        (100.0, 115.0, 30.0, 0.55),
        (100.0, 130.0, 30.0, 1.0),
        (100.0, 500.0, 30.0, 1.0),
        (100.0, 90.0, 30.0, 0.1),  # clock skew: never below the floor
    ],
)
def test_slow_start_share(since: float | None, now: float, window: float, share: float) -> None:
    assert slow_start_share(since, now, window) == pytest.approx(share)


def pick(strategy: str, backends: list[Backend], **kwargs: object) -> str:
    defaults: dict[str, object] = {
        "loads": {},
        "now": 1000.0,
        "slow_start_seconds": 0.0,
        "turn": 0,
        "draws": Draws(),
    }
    defaults.update(kwargs)
    chosen = choose(strategy, backends, **defaults)  # type: ignore[arg-type]
    assert chosen is not None
    return chosen.registration_id


@pytest.mark.parametrize(("turn", "expected"), [(0, "a"), (1, "b"), (2, "c"), (3, "a"), (7, "b")])
def test_round_robin(turn: int, expected: str) -> None:
    assert pick("round_robin", [C, A, B], turn=turn) == expected


@pytest.mark.parametrize(
    ("loads", "draws", "expected"),
    [
        ({"a": Load(5), "b": Load(1)}, Draws(0, 0.0, 0.0), "b"),  # a vs b
        ({"a": Load(0), "b": Load(1)}, Draws(0, 0.0, 0.0), "a"),
        ({"a": Load(0), "b": Load(9), "c": Load(3)}, Draws(0, 0.5, 0.9), "c"),  # b vs c
        ({}, Draws(0, 0.9, 0.0), "c"),  # tie: the first drawn
    ],
)
def test_least_loaded_power_of_two(loads: dict[str, Load], draws: Draws, expected: str) -> None:
    assert pick("least_loaded", [A, B, C], loads=loads, draws=draws) == expected


def test_least_loaded_respects_weight() -> None:
    heavy = backend("a", weight=4)
    assert pick("least_loaded", [heavy, B], loads={"a": Load(3), "b": Load(1)}) == "a"


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ({"a": Load(0, 50.0), "b": Load(0, 20.0), "c": Load(0, 90.0)}, "b"),
        ({"a": Load(0, 50.0), "b": Load(0, 20.0)}, "b"),  # c unmeasured: as their mean, 35
        ({"a": Load(1, 50.0), "b": Load(1, 40.0)}, "c"),  # ... 45, and a and b are busy
        # The fastest is not sent everything: each request in flight counts.
        ({"a": Load(3, 10.0), "b": Load(1, 10.0), "c": Load(0, 11.0)}, "c"),
        ({"a": Load(0, 50.0), "b": Load(4, 20.0), "c": Load(0, 60.0)}, "a"),
        # Time to first token, as it came, over a whole answer's latency.
        ({"a": Load(0, 10.0, 90.0), "b": Load(0, 50.0, 20.0), "c": Load(0, 30.0)}, "b"),
        # Nothing measured yet: the fewest in flight.
        ({"a": Load(2), "b": Load(1)}, "c"),
    ],
)
def test_fastest_response(loads: dict[str, Load], expected: str) -> None:
    assert pick("fastest_response", [A, B, C], loads=loads) == expected


@pytest.mark.parametrize(("draw", "expected"), [(0.0, "a"), (0.24, "a"), (0.26, "b"), (0.99, "b")])
def test_weighted(draw: float, expected: str) -> None:
    backends = [backend("a", weight=1), backend("b", weight=3)]
    assert pick("weighted", backends, draws=Draws(0, draw, 0)) == expected


def test_weighted_scales_a_warming_backend() -> None:
    warming = backend("a", weight=1, healthy_since=1000.0)  # share 0.1 at now=1000
    backends = [warming, backend("b", weight=1)]
    kwargs = {"slow_start_seconds": 30.0, "now": 1000.0}
    assert pick("weighted", backends, draws=Draws(0, 0.08, 0), **kwargs) == "a"  # 0.088 < 0.1
    assert pick("weighted", backends, draws=Draws(0, 0.1, 0), **kwargs) == "b"


@pytest.mark.parametrize(("thinning", "expected"), [(0.05, "a"), (0.5, "b")])
def test_slow_start_thins_round_robin(thinning: float, expected: str) -> None:
    warming = backend("a", healthy_since=1000.0)
    chosen = pick(
        "round_robin",
        [warming, B],
        now=1000.0,
        slow_start_seconds=30.0,
        draws=Draws(thinning, 0, 0),
        turn=0,
    )
    assert chosen == expected


def test_slow_start_never_leaves_nobody() -> None:
    only = backend("a", healthy_since=1000.0)
    assert pick("round_robin", [only], now=1000.0, slow_start_seconds=30.0, draws=Draws(0.9)) == "a"


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy"):
        pick("random", [A])


@pytest.mark.parametrize(
    ("backends", "tags", "loads", "streaming", "fragment"),
    [
        ([backend("a", healthy=False)], set(), {}, False, "no healthy backend"),
        ([A], {"gpu"}, {}, False, "carries the tags gpu"),
        ([backend("a", max_concurrent=1)], set(), {"a": Load(1)}, False, "concurrency limit"),
        ([backend("a", streaming=False)], set(), {}, True, "supports streaming"),
        ([A], set(), {}, False, "failed this request"),
    ],
)
def test_explanations(
    backends: list[Backend], tags: set[str], loads: dict[str, Load], streaming: bool, fragment: str
) -> None:
    text = explain_no_backend(
        backends, required_tags=frozenset(tags), loads=loads, streaming=streaming
    )
    assert fragment in text


@pytest.mark.parametrize(
    ("previous", "sample", "expected"), [(None, 40.0, 40.0), (10.0, 20.0, 13.0), (20.0, 20.0, 20.0)]
)
def test_moving_average(previous: float | None, sample: float, expected: float) -> None:
    assert moving_average(previous, sample) == pytest.approx(expected)


def test_balancer_counts_turns_per_model_and_in_flight() -> None:
    balancer = Balancer("round_robin", 0)
    backends = (A, B)
    picks = [
        balancer.pick(backends, required_tags=frozenset(), exclude=frozenset(), streaming=False)
        for _ in range(4)
    ]
    assert [p.registration_id for p in picks if p] == ["a", "b", "a", "b"]
    balancer.started("a")
    balancer.started("a")
    balancer.finished("a", 12.0)
    assert balancer.loads["a"] == Load(1, 12.0)
    balancer.finished("a", None)
    assert balancer.loads["a"] == Load(0, 12.0)


@pytest.mark.parametrize(
    ("after", "picked"),
    [
        (0.0, ["b", "b"]),  # full across the instances: passed over
        (0.3, ["a", "b"]),  # the mark lapsed (FULL_ELSEWHERE_SECONDS)
        ("finished", ["a", "b"]),  # this process freed one of its slots
    ],
)
def test_a_backend_full_elsewhere_is_passed_over_a_moment(
    after: float | str, picked: list[str]
) -> None:
    now = [0.0]
    balancer = Balancer("round_robin", 0, monotonic=lambda: now[0])
    balancer.full_elsewhere("a")
    if after == "finished":
        balancer.started("a")
        balancer.finished("a", None)
    else:
        now[0] = float(after)
    picks = [
        balancer.pick((A, B), required_tags=frozenset(), exclude=frozenset(), streaming=False)
        for _ in range(2)
    ]
    assert [p.registration_id for p in picks if p] == picked
    one = balancer.pick((A,), required_tags=frozenset(), exclude=frozenset(), streaming=False)
    assert (one is None) == (picked[0] == "b")
