"""healthd's policy as tables."""

from __future__ import annotations

import pytest

from healthd.policy import Verdict, judge, next_delay


@pytest.mark.parametrize(
    ("healthy", "failures", "interval", "draw", "delay"),
    [
        (True, 0, 60, 0.0, 48.0),  # 80 % of the interval at the earliest
        (True, 0, 60, 0.5, 52.5),
        (True, 0, 60, 0.999999, 57.0),  # 95 % at the latest: room for tick and probe
        (False, 1, 60, 0.5, 1.0),
        (False, 1, 60, 0.0, 0.9),
        (False, 2, 60, 0.5, 2.0),
        (False, 3, 60, 0.5, 4.0),
        (False, 6, 60, 0.5, 32.0),
        (False, 7, 60, 0.5, 52.5),  # capped below the interval
        (False, 50, 10, 0.5, 8.75),
        (False, 0, 60, 0.5, 52.5),  # unknown, never failed: the normal interval
    ],
)
def test_next_delay(
    healthy: bool, failures: int, interval: float, draw: float, delay: float
) -> None:
    assert next_delay(
        healthy=healthy, consecutive_failures=failures, interval=interval, jitter_draw=draw
    ) == pytest.approx(delay, rel=1e-5)


@pytest.mark.parametrize(
    ("status", "failures", "ok", "max_failures", "auto", "verdict"),
    [
        ("unknown", 0, True, 3, False, Verdict("healthy", 0, True, False)),
        ("healthy", 0, True, 3, False, Verdict("healthy", 0, False, False)),
        ("unhealthy", 4, True, 3, True, Verdict("healthy", 0, True, False)),
        ("healthy", 0, False, 3, True, Verdict("unhealthy", 1, True, False)),
        ("unhealthy", 1, False, 3, True, Verdict("unhealthy", 2, False, False)),
        ("unhealthy", 2, False, 3, True, Verdict("unhealthy", 3, False, True)),
        ("unhealthy", 2, False, 3, False, Verdict("unhealthy", 3, False, False)),
        ("unknown", 0, False, 1, True, Verdict("unhealthy", 1, True, True)),
    ],
)
def test_judge(
    status: str, failures: int, ok: bool, max_failures: int, auto: bool, verdict: Verdict
) -> None:
    assert (
        judge(
            status=status,
            consecutive_failures=failures,
            check_ok=ok,
            max_failures=max_failures,
            auto_deregister=auto,
        )
        == verdict
    )
