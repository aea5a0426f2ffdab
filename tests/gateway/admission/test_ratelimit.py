"""The rate limiter's token bucket, as a table, and per client."""

from __future__ import annotations

import pytest

from gateway.admission.ratelimit import (
    MAX_CLIENTS,
    Bucket,
    RateLimiter,
    client_of,
    take_token,
)


@pytest.mark.parametrize(
    ("bucket", "now", "per_minute", "tokens_after", "wait"),
    [
        (None, 0.0, 60, 59.0, 0.0),
        (Bucket(0.0, 0.0), 0.5, 60, 0.5, 0.5),  # half a token back: wait the other half
        (Bucket(0.0, 0.0), 1.0, 60, 0.0, 0.0),
        (Bucket(0.0, 0.0), 10.0, 6, 0.0, 0.0),
        (Bucket(10.0, 0.0), 1000.0, 12, 11.0, 0.0),  # refills up to capacity only
        (Bucket(0.2, 0.0), 0.0, 60, 0.2, 0.8),
    ],
)
def test_take_token(
    bucket: Bucket | None, now: float, per_minute: int, tokens_after: float, wait: float
) -> None:
    new, waited = take_token(bucket, now=now, per_minute=per_minute)
    assert new.tokens == pytest.approx(tokens_after)
    assert waited == pytest.approx(wait)


def test_rate_limiter_per_client() -> None:
    clock = [0.0]
    limiter = RateLimiter(2, clock=lambda: clock[0])
    assert [limiter.check("x") for _ in range(2)] == [0, 0]
    assert limiter.check("x") == pytest.approx(30.0)
    assert limiter.check("y") == 0
    clock[0] = 30.0
    assert limiter.check("x") == 0


def test_many_new_clients_push_out_only_the_least_recently_seen() -> None:
    """Rotating addresses past the limit must not give everyone a fresh bucket."""
    limiter = RateLimiter(1, clock=lambda: 0.0)
    assert limiter.check("busy") == 0
    for n in range(MAX_CLIENTS + 300):  # "busy" stays limited as long as it is seen
        limiter.check(f"rotating-{n}")
        if n % 100 == 0:
            assert limiter.check("busy") > 0
    assert limiter.check("busy") > 0
    assert len(limiter.buckets) == MAX_CLIENTS


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "ip:192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("unknown", "ip:unknown"),
        ("not:an:address", "ip:not:an:address"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64(host: str, key: str) -> None:
    assert client_of(host) == key
