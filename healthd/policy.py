"""healthd's decisions, as pure functions: when to probe next, and what a result means.

- A healthy backend is probed every HEALTH_CHECK_INTERVAL_SECONDS, give or take
  10 % (jitter spreads the load of many backends over the interval).
- A failing backend is re-probed with exponential backoff that starts at
  BACKOFF_START_SECONDS and doubles up to the interval: a recovery is seen in
  seconds, and a dead server is not hammered.
- One failed check makes a backend unhealthy, one success makes it healthy
  (FR-HEALTH-003); MAX_CONSECUTIVE_FAILURES failures in a row deregister it
  when AUTO_DEREGISTER is on (FR-HEALTH-005).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_START_SECONDS = 1.0
JITTER = 0.1


def next_delay(
    *, healthy: bool, consecutive_failures: int, interval: float, jitter_draw: float
) -> float:
    """Seconds until the next probe; `jitter_draw` is a random number in [0, 1)."""
    if healthy or consecutive_failures <= 0:
        base = interval
    else:
        base = min(interval, BACKOFF_START_SECONDS * 2 ** (consecutive_failures - 1))
    return base * (1 - JITTER + 2 * JITTER * jitter_draw)


@dataclass(frozen=True)
class Verdict:
    status: str
    consecutive_failures: int
    status_changed: bool
    deregister: bool


def judge(
    *,
    status: str,
    consecutive_failures: int,
    check_ok: bool,
    max_failures: int,
    auto_deregister: bool,
) -> Verdict:
    """What one probe result does to a backend's record."""
    if check_ok:
        return Verdict("healthy", 0, status != "healthy", False)
    failures = consecutive_failures + 1
    return Verdict(
        "unhealthy",
        failures,
        status != "unhealthy",
        auto_deregister and failures >= max_failures,
    )
