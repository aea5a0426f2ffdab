"""The `auto` strategy's scorer, as tables: load, speed, KV pressure, residency, affinity."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.routing.balancer import (
    HASHES_REMEMBERED,
    KEYS_REMEMBERED,
    STALE_REPORT_SECONDS,
    Balancer,
)
from gateway.routing.policy import Backend
from gateway.routing.reported.reports import Report
from gateway.routing.reported.scorer import (
    LOAD_BOUND,
    Hint,
    View,
    choose_auto,
    cost,
    hash_log,
    queue,
    rendezvous,
)

A, B, C = (Backend(name, "m", f"http://{name}") for name in "abc")


def vllm(waiting: float = 0, running: float = 0, kv: float | None = None) -> Report:
    return Report(0.0, "vllm", waiting=waiting, running=running, kv_usage=kv)


def ollama(*loaded: str) -> Report:
    return Report(0.0, "ollama", loaded=frozenset(loaded))


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (View(), 0.0),
        # No report: this worker's own requests only (never "idle" when it has some).
        (View(in_flight=4), 2.0),
        (View(in_flight=4, report=vllm(running=10)), 1.0),
        # A waiting request weighs ten running ones; those sent since the report run
        # if the server had room then, else they wait.
        (View(report=vllm(waiting=2, running=10)), 3.0),
        (View(sent_since_report=3, report=vllm(running=0)), 0.3),
        (View(sent_since_report=3, report=vllm(waiting=1, running=4)), 4.4),
        # A report older than this worker's own count does not hide it.
        (View(in_flight=30, report=vllm(running=0)), 3.0),
    ],
)
def test_queue(view: View, expected: float) -> None:
    assert queue(view) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("view", "hint", "model", "expected"),
    [
        (View(), Hint(), "m", 1.0),
        (View(speed=0.5), Hint(), "m", 2.0),
        # A prompt's prefill.
        (View(), Hint(prompt_tokens=2000), "m", 3.0),
        (View(speed=0.5), Hint(prompt_tokens=2000), "m", 6.0),
        # KV cache pressure counts above 90 %.
        (View(report=vllm(kv=0.9)), Hint(), "m", 1.0),
        (View(report=vllm(kv=0.95)), Hint(), "m", 11.0),
        # A model not in memory costs a load, more when the server is busy with another.
        (View(report=ollama("llama3:latest")), Hint(), "llama3", 1.0),
        (View(report=ollama("qwen:7b")), Hint(), "llama3", 31.0),
        (View(in_flight=2, report=ollama("qwen:7b")), Hint(), "llama3", 61.2),
    ],
)
def test_cost(view: View, hint: Hint, model: str, expected: float) -> None:
    assert cost(view, hint=hint, model=model) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ({"a": View(), "b": View(), "c": View()}, "a"),  # a tie: by id
        ({"a": View(report=vllm(waiting=1)), "b": View(), "c": View()}, "b"),
        # Speed: four running on a fast server beat one on a server four times slower.
        ({"a": View(report=vllm(running=4)), "b": View(speed=0.25), "c": View(speed=0.25)}, "a"),
        # A burst since the last scrape spreads instead of landing on the idle-looking one.
        (
            {
                "a": View(sent_since_report=8, report=vllm()),
                "b": View(report=vllm(running=5)),
                "c": View(report=vllm(running=6)),
            },
            "b",
        ),
        (
            {
                "a": View(report=vllm(kv=0.99)),
                "b": View(report=vllm(running=9)),
                "c": View(speed=0.1),
            },
            "b",
        ),
        # Ollama: the server with the model loaded, not the one that would evict another.
        (
            {
                "a": View(in_flight=1, report=ollama("qwen:7b")),
                "b": View(in_flight=3, report=ollama("m:latest")),
                "c": View(report=ollama()),
            },
            "b",
        ),
    ],
)
def test_choose_without_affinity(views: dict[str, View], expected: str) -> None:
    assert choose_auto([A, B, C], views, Hint()).registration_id == expected


def home_of(key: bytes, backends: list[Backend]) -> str:
    return rendezvous(key, backends, {}).pop(0).registration_id


def test_a_conversation_goes_home_while_home_is_not_overloaded() -> None:
    key = b"conversation-1"
    home = home_of(key, [A, B, C])
    hint = Hint(affinity=key, prompt_tokens=3000)
    idle = {b.registration_id: View(report=vllm()) for b in (A, B, C)}
    assert choose_auto([A, B, C], idle, hint).registration_id == home
    # Busier than the others, still home: within twice the least loaded's load.
    busy = {**idle, home: View(report=vllm(running=8))}
    assert choose_auto([A, B, C], busy, hint).registration_id == home
    # Over the bound: the next server in the key's order, the same one every time,
    # whatever the prompt's size (it grows with every turn).
    swamped = {**idle, home: View(report=vllm(waiting=1, running=1))}
    spill = rendezvous(key, [A, B, C], {})[1].registration_id
    for tokens in (100, 3000, 30_000):
        grown = Hint(affinity=key, prompt_tokens=tokens)
        assert choose_auto([A, B, C], swamped, grown).registration_id == spill


def test_rendezvous_moves_only_the_keys_of_a_server_that_leaves() -> None:
    keys = [f"k{n}".encode() for n in range(2000)]
    before = {key: home_of(key, [A, B, C]) for key in keys}
    after = {key: home_of(key, [A, C]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved and all(before[key] == "b" for key in moved)
    assert 0.28 < len(moved) / len(keys) < 0.39  # b's third


def test_rendezvous_shares_follow_speed() -> None:
    rng = random.Random(5)
    keys = [rng.randbytes(8) for _ in range(4000)]
    speeds = {"a": 2.0, "b": 1.0, "c": 1.0}
    homes = Counter(rendezvous(key, [A, B, C], speeds)[0].registration_id for key in keys)
    assert homes["a"] / len(keys) == pytest.approx(0.5, abs=0.04)


def test_the_balancer_treats_a_stale_report_as_unknown_and_counts_what_it_sent() -> None:
    now = [100.0]
    balancer = Balancer("auto", 0, monotonic=lambda: now[0])
    balancer.report("a", Report(100.0, "vllm", running=3))
    balancer.started("a")
    balancer.started("a")
    view = balancer.views([A])["a"]
    assert view.report is not None and view.sent_since_report == 2 and view.in_flight == 2
    balancer.report("a", Report(100.1, "vllm", running=5))
    assert balancer.views([A])["a"].sent_since_report == 0
    now[0] += STALE_REPORT_SECONDS + 0.2
    assert balancer.views([A])["a"].report is None  # stale: unknown, not idle
    balancer.forget_reports(frozenset())
    assert balancer.reports == {}


def test_the_balancer_measures_speed_per_token_at_an_empty_batch() -> None:
    balancer = Balancer("auto", 0, monotonic=lambda: 0.0)
    balancer.decoded("a", 1.0, 100)  # 10 ms a token
    balancer.report("b", Report(0.0, "vllm", running=10))
    balancer.decoded("b", 2.0, 100)  # 20 ms a token, but beside 10 others: 10 ms alone
    balancer.decoded("c", 4.0, 100)
    balancer.decoded("c", 1.0, 15)  # too short to say anything
    views = balancer.views([A, B, C])
    assert views["a"].speed == pytest.approx(1.0)
    assert views["b"].speed == pytest.approx(1.0)
    assert views["c"].speed == pytest.approx(0.25)


def test_auto_picks_through_the_balancer() -> None:
    balancer = Balancer("auto", 0, monotonic=lambda: 0.0)
    balancer.report("a", Report(0.0, "vllm", waiting=3))
    balancer.report("b", Report(0.0, "vllm", running=1))
    picked = balancer.pick(
        (A, B), required_tags=frozenset(), exclude=frozenset(), streaming=False, hint=Hint()
    )
    assert picked is B


def test_a_server_half_as_fast_is_home_to_a_quarter_as_many_conversations() -> None:
    rng = random.Random(9)
    views = {
        "a": View(report=vllm()),
        "b": View(report=vllm()),
        "c": View(speed=0.5, report=vllm()),
    }
    keys = [rng.randbytes(8) for _ in range(3000)]
    homes = Counter(
        choose_auto([A, B, C], views, Hint(affinity=key)).registration_id for key in keys
    )
    assert homes["c"] / len(keys) == pytest.approx(1 / 9, abs=0.03)


def reference_choice(candidates: list[Backend], views: dict[str, View], key: bytes) -> str:
    """choose_auto with affinity as its docstring says it, the slow way: the key's
    rendezvous order (speed squared), the first within the bound of the least load."""
    loads = {
        b.registration_id: cost(views[b.registration_id], hint=Hint(), model="m")
        for b in candidates
    }
    bound = LOAD_BOUND * min(loads.values())
    weights = {b.registration_id: views[b.registration_id].speed ** 2 for b in candidates}
    ordered = rendezvous(key, candidates, weights)
    return next(b for b in ordered if loads[b.registration_id] <= bound).registration_id


def random_view(rng: random.Random) -> View:
    report = rng.choice([None, vllm(), vllm(rng.randint(0, 3), rng.randint(0, 20), rng.random())])
    return View(rng.randint(0, 12), rng.randint(0, 4), report, rng.choice([1.0, 0.5, 0.25]))


def test_the_fast_choice_is_the_reference_choice() -> None:
    """choose_auto's shortcuts (hashes kept per key, none when one candidate is within
    the bound, the balancer's skip of a lone candidate) choose as the slow way does."""
    rng = random.Random(23)
    backends = [Backend(f"r{n}", "m", f"http://r{n}") for n in range(5)]
    balancer = Balancer("auto", 0, monotonic=lambda: 0.0)
    for _ in range(3000):
        candidates = rng.sample(backends, rng.randint(1, 5))
        views = {b.registration_id: random_view(rng) for b in candidates}
        key = rng.randbytes(4)
        expected = reference_choice(candidates, views, key)
        hint = Hint(affinity=key)
        assert choose_auto(candidates, views, hint).registration_id == expected
        logs = balancer._hash_logs(key, candidates)
        assert choose_auto(candidates, views, hint, logs).registration_id == expected


def test_the_balancer_keeps_a_bounded_number_of_keys_hashes() -> None:
    balancer = Balancer("auto", 0, monotonic=lambda: 0.0)
    for n in range(KEYS_REMEMBERED + 10):
        key = n.to_bytes(4, "big")
        assert balancer._hash_logs(key, [A, B]) == {
            "a": hash_log(key, "a"),
            "b": hash_log(key, "b"),
        }
    assert len(balancer.hash_logs) <= KEYS_REMEMBERED
    many = [Backend(f"r{n}", "m", f"http://r{n}") for n in range(100)]
    for n in range(HASHES_REMEMBERED // 100 + 10):
        balancer._hash_logs(n.to_bytes(4, "big"), many)
    assert sum(map(len, balancer.hash_logs.values())) <= HASHES_REMEMBERED
    assert balancer.hashes_kept == sum(map(len, balancer.hash_logs.values()))
