"""healthd's decisions, as pure functions: when to probe next, and what a result means.

- A healthy backend is probed again 80-95 % of HEALTH_CHECK_INTERVAL_SECONDS
  after its last probe started: the jitter spreads many backends over the
  interval, and the headroom keeps every gap within the interval even with
  the daemon's tick and a slow probe on top.
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
EARLIEST, LATEST = 0.80, 0.95  # of the interval


def next_delay(
    *, healthy: bool, consecutive_failures: int, interval: float, jitter_draw: float
) -> float:
    """Seconds from the start of a probe to the next one; `jitter_draw` is in [0, 1)."""
    spread = EARLIEST + (LATEST - EARLIEST) * jitter_draw
    if healthy or consecutive_failures <= 0:
        return interval * spread
    backoff = BACKOFF_START_SECONDS * 2.0 ** (consecutive_failures - 1)
    return min(interval * spread, backoff * (0.9 + 0.2 * jitter_draw))


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
