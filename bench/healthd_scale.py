"""`make bench` healthd scenario: 1,000 backends, a quarter hanging, a 10 s interval.

healthd probes them while the gateway serves traffic from the same SQLite
file; afterwards the health history says how long each backend waited between
probes, how many rows were written per second, and the gateway's log and wrk
say whether a "database is locked" ever reached a client.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from sqlalchemy import func, select

from bench.run import (
    BIN,
    free_port,
    gateway_environment,
    register_bench_backend,
    start,
    stop,
    wait_http,
    wrk,
)
from shared.db import Database
from shared.models import HealthCheck, ModelServer, utcnow

INTERVAL = 10
TIMEOUT = 5


def add_backends(database: Database, base_url: str, count: int) -> None:
    now = utcnow()
    with database.writing() as session:
        for index in range(count):
            session.add(
                ModelServer(
                    model_name="scale",
                    endpoint_url=f"{base_url}/b{index}",
                    registered_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )


def gaps(database: Database, start_after: datetime) -> tuple[list[float], list[float], int]:
    """Seconds between consecutive checks, for answering and for hanging backends."""
    by_server: dict[str, list[datetime]] = defaultdict(list)
    hanging: set[str] = set()
    with database.reading() as session:
        urls = dict(session.execute(select(ModelServer.id, ModelServer.endpoint_url)).all())
        for server_id, checked_at in session.execute(
            select(HealthCheck.server_id, HealthCheck.checked_at)
            .where(HealthCheck.checked_at >= start_after)
            .order_by(HealthCheck.checked_at)
        ):
            by_server[server_id].append(checked_at)
    for server_id, url in urls.items():
        index = url.rsplit("/b", 1)[-1]
        if index.isdigit() and int(index) % 4 == 0:
            hanging.add(server_id)
    answering, stalled = [], []
    rows = 0
    for server_id, times in by_server.items():
        rows += len(times)
        target = stalled if server_id in hanging else answering
        target += [(b - a).total_seconds() for a, b in pairwise(times)]
    return answering, stalled, rows


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=45)
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="healthd-scale-"))
    many_port, bench_port, gateway_port = free_port(), free_port(), free_port()
    env = gateway_environment(
        workdir,
        gateway_port,
        LOG_LEVEL="INFO",
        HEALTH_CHECK_INTERVAL_SECONDS=str(INTERVAL),
        HEALTH_CHECK_TIMEOUT_SECONDS=str(TIMEOUT),
    )
    database = Database.connect(env["DATABASE_URL"])
    many = start(
        [sys.executable, "-m", "bench.many_backends", "--port", str(many_port)],
        env,
        workdir / "many.log",
    )
    backend = start(
        [sys.executable, "-m", "bench.backend", "--port", str(bench_port)],
        env,
        workdir / "backend.log",
    )
    gateway = start([str(BIN / "gateway")], env, workdir / "gateway.stdout")
    healthd = None
    script = workdir / "post.lua"
    from bench.run import WRK_SCRIPT

    script.write_text(WRK_SCRIPT)
    try:
        wait_http(f"http://127.0.0.1:{many_port}/b1/v1/models")
        register_bench_backend(gateway_port, bench_port)
        add_backends(database, f"http://127.0.0.1:{many_port}", arguments.backends)
        started = utcnow()
        healthd = start([str(BIN / "healthd")], env, workdir / "healthd.stdout")
        time.sleep(2 * INTERVAL)  # let the first cycle and the backoff settle
        measured_from = utcnow()
        traffic = wrk(
            f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
            16,
            arguments.seconds - 2 * INTERVAL,
            script,
        )
        answering, stalled, rows = gaps(database, measured_from)
        elapsed = (utcnow() - measured_from).total_seconds()
    finally:
        if healthd is not None:
            stop(healthd)
        stop(gateway)
        stop(backend)
        stop(many)
    logs = "".join(p.read_text() for p in (workdir / "logs").glob("*.log"))
    locked = logs.count("database is locked")
    with database.reading() as session:
        firsts = session.execute(
            select(HealthCheck.server_id, func.min(HealthCheck.checked_at)).group_by(
                HealthCheck.server_id
            )
        ).all()
    first_cycle = max(first for _, first in firsts) - started if firsts else None
    print(
        f"\n## healthd: {arguments.backends} backends, 1/4 hanging, interval {INTERVAL} s, "
        f"timeout {TIMEOUT} s\n"
    )
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| answering backends: gap between probes, median / p99 / max s | "
        f"{statistics.median(answering):.1f} / {percentile(answering, 0.99):.1f} / "
        f"{max(answering):.1f} |"
    )
    print(
        f"| hanging backends: gap between probes, median / max s | "
        f"{statistics.median(stalled):.1f} / {max(stalled):.1f} |"
    )
    print(f"| health_checks rows written per second | {rows / elapsed:.0f} |")
    print(
        f"| every backend probed once, {len(firsts)} of them, within s of start | "
        f"{first_cycle.total_seconds():.1f} |"
        if first_cycle
        else "| first cycle | no probe |"
    )
    print(
        f"| gateway traffic meanwhile: requests/s, p99 ms, errors | "
        f"{traffic.requests_per_second:,.0f}, {traffic.p99_ms:.1f}, {traffic.errors} |"
    )
    print(f"| 'database is locked' in any log | {locked} |")
    database.dispose()


if __name__ == "__main__":
    main()
