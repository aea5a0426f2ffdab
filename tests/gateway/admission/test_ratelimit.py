"""The rate limiter's token bucket, as a table, and per client."""

from __future__ import annotations

import pytest

from gateway.admission.ratelimit import Bucket, RateLimiter, take_token


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
