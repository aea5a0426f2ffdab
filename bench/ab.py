"""Two builds of the gateway side by side on one backend: is a data-path change faster or slower?

    python -m bench.ab --a "$(python -m bench.build_at REV)" --b .venv/bin

(bench/build_at.py makes another commit runnable beside this one; see there why
a PYTHONPATH alone would run this checkout's code as "A").

`make bench` compares the gateway with the backend called directly; on a
shared machine whose speed drifts by a quarter within an hour, two `make
bench` runs minutes apart cannot tell a 5 % change from noise. Here both
gateways run at once against the same backend, wrk alternates between them
round by round (so both see the same drift), and each gateway's CPU time per
request is read from /proc: that figure hardly moves with the load generator.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import (
    REQUEST,
    WRK_SCRIPT,
    free_port,
    gateway_environment,
    register_bench_backend,
    start,
    stop,
    wrk,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def issue_bench_key(database_url: str, limits: dict[str, int]) -> str:
    """A client key in a bench gateway's database, as POST /admin/keys makes one."""
    from gateway.admission.key_format import key_hash, new_key, visible_prefix
    from shared.db import Database
    from shared.models import ClientKey

    key = new_key()
    database = Database.connect(database_url)
    try:
        with database.writing() as session:
            session.add(
                ClientKey(
                    name="bench",
                    owner="bench",
                    key_hash=key_hash(key),
                    prefix=visible_prefix(key),
                    limits=limits,
                )
            )
    finally:
        database.dispose()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="bin folder of build A's venv")
    parser.add_argument("--b", type=Path, required=True, help="bin folder of build B's venv")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--backends", type=int, default=1, help="backends of the model (2+: routing chooses)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="the backends are registered with this max_concurrent (both builds)",
    )
    parser.add_argument(
        "--a-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for A only"
    )
    parser.add_argument(
        "--b-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for B only"
    )
    parser.add_argument(
        "--a-key-limits",
        metavar="JSON",
        help="A is called with a client key of these limits (with --b-env REDIS_URL=...: "
        "the added cost of Redis-backed limits)",
    )
    parser.add_argument(
        "--b-key-limits",
        metavar="JSON",
        help='B is called with a client key of these limits (e.g. \'{"requests_per_minute": '
        '100000000, "tokens_per_minute": 100000000}\'): the cost of keys and limits',
    )
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    backend_ports = [free_port() for _ in range(arguments.backends)]
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    processes = []
    try:
        backend_env = {**os.environ}
        for backend_port in backend_ports:
            backend = start(
                [sys.executable, "-m", "bench.backend", "--port", str(backend_port)],
                backend_env,
                workdir / f"backend-{backend_port}.log",
            )
            processes.append(backend)
        gateways: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
        scripts: dict[str, Path] = {}
        headers: dict[str, dict[str, str]] = {}
        own_settings = {
            "A": dict(item.split("=", 1) for item in arguments.a_env),
            "B": dict(item.split("=", 1) for item in arguments.b_env),
        }
        for name, bin_dir in (("A", arguments.a), ("B", arguments.b)):
            folder = workdir / name
            folder.mkdir()
            port = free_port()
            env = gateway_environment(
                folder,
                port,
                WORKERS="1",
                LOG_LEVEL="INFO",
                HEALTH_CHECK_INTERVAL_SECONDS="60",
                **own_settings[name],
            )
            process = start([str(bin_dir / "gateway")], env, folder / "gateway.stdout")
            processes.append(process)
            capped = (
                {}
                if arguments.max_concurrent is None
                else {"max_concurrent": arguments.max_concurrent}
            )
            for backend_port in backend_ports:
                register_bench_backend(port, backend_port, **capped)
            gateways[name] = (port, process.pid)
            scripts[name] = script
            key_limits = arguments.a_key_limits if name == "A" else arguments.b_key_limits
            if key_limits:
                key = issue_bench_key(env["DATABASE_URL"], json.loads(key_limits))
                scripts[name] = workdir / f"post-with-key-{name}.lua"
                scripts[name].write_text(
                    WRK_SCRIPT.replace(
                        "wrk.method", f'wrk.headers["Authorization"] = "Bearer {key}"\nwrk.method'
                    )
                )
                headers[name] = {"Authorization": f"Bearer {key}"}
        for name, (port, _) in gateways.items():
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            deadline = time.monotonic() + 10
            while httpx.post(url, content=REQUEST, headers=headers.get(name)).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("a gateway never routed to the bench backend")
                time.sleep(0.1)
            wrk(url, arguments.connections, 2, scripts[name])  # warm-up

        rates: dict[str, list[float]] = {"A": [], "B": []}
        p99s: dict[str, list[float]] = {"A": [], "B": []}
        cpu_us: dict[str, list[float]] = {"A": [], "B": []}
        for round_number in range(arguments.rounds):
            order = ("A", "B") if round_number % 2 == 0 else ("B", "A")
            for name in order:
                port, pid = gateways[name]
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                before = cpu_seconds(pid)
                result = wrk(url, arguments.connections, arguments.seconds, scripts[name])
                used = cpu_seconds(pid) - before
                requests = result.requests_per_second * arguments.seconds
                rates[name].append(result.requests_per_second)
                p99s[name].append(result.p99_ms)
                cpu_us[name].append(used / requests * 1e6 if requests else float("nan"))
        print(
            f"{arguments.rounds} alternating rounds of {arguments.seconds} s, "
            f"{arguments.connections} connections; medians"
        )
        print("| build | requests/s | p99 ms | CPU µs per request |")
        print("|---|---|---|---|")
        for name in ("A", "B"):
            print(
                f"| {name} | {statistics.median(rates[name]):,.0f} | "
                f"{statistics.median(p99s[name]):.2f} | {statistics.median(cpu_us[name]):.0f} |"
            )
        ratio = statistics.median(b / a for a, b in zip(rates["A"], rates["B"], strict=True))
        print(f"B/A requests/s, median of the rounds' ratios: {ratio:.3f}")
        # Paired: each round's B against the A run next to it (both saw the same drift).
        cpu_ratio = statistics.median(b / a for a, b in zip(cpu_us["A"], cpu_us["B"], strict=True))
        print(f"B/A CPU µs per request, median of the rounds' ratios: {cpu_ratio:.3f}")
    finally:
        for process in reversed(processes):
            stop(process)


if __name__ == "__main__":
    main()
