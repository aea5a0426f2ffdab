"""`make bench`: the gateway against the same backend called directly, in one run.

Scenarios (all on 127.0.0.1, bounded in time, stopping by themselves):
1. 64 connections, non-streaming, wrk: requests/s, p50, p99, errors;
2. 1 connection, non-streaming, wrk: the latency the gateway adds;
3. 1,000 concurrent streams of 20 chunks 100 ms apart (raw sockets on uvloop,
   the lightest client we could write): errors, chunk order, first-byte delay
   added, and the gateway's peak memory;
4. the same with 5,000 streams (`--big-streams`), BACKEND_MAX_CONNECTIONS
   set to let them all through (the limit is in force, not in the way).
Each wrk figure is the median over alternating rounds (direct, gateway,
direct, ...), so both see the same noise; compare ratios, not absolute
numbers, on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvloop

BIN = Path(sys.executable).parent
ADMIN_KEY = "bench-admin-key-0123456789"
REQUEST = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
)
STREAM_REQUEST = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "stream": True}
).encode()

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[REQUEST_BODY]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "RESULT {\\"requests\\": %d, \\"seconds\\": %f, \\"p50_us\\": %d, \\"p99_us\\": %d, " ..
    "\\"errors\\": %d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    errors))
end
""".replace("REQUEST_BODY", REQUEST)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def gateway_environment(workdir: Path, gateway_port: int, **extra: str) -> dict[str, str]:
    """Settings for the bench's gateway (and healthd) in `workdir`, its database migrated."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "ADMIN_API_KEY": ADMIN_KEY,
        "ALLOW_PRIVATE_BACKENDS": "true",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_DIR": str(workdir / "logs"),
        "HOST": "127.0.0.1",
        "PORT": str(gateway_port),
        **extra,
    }
    subprocess.run([str(BIN / "gateway-admin"), "db", "upgrade"], env=env, check=True)
    return env


def register_bench_backend(gateway_port: int, backend_port: int, **fields: object) -> None:
    """Once both answer, register the bench backend (model `bench`) through the admin API
    (`fields`: more of the registration, e.g. max_concurrent)."""
    wait_http(f"http://127.0.0.1:{backend_port}/v1/models")
    wait_http(f"http://127.0.0.1:{gateway_port}/health")
    endpoint = f"http://127.0.0.1:{backend_port}"
    httpx.post(
        f"http://127.0.0.1:{gateway_port}/admin/register",
        json={"model_name": "bench", "endpoint_url": endpoint, **fields},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    ).raise_for_status()


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, connections: int, seconds: int, script: Path) -> WrkResult:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return WrkResult(
        requests_per_second=data["requests"] / data["seconds"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"],
    )


def median_of(results: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds (errors: the total)."""
    return WrkResult(
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )


@dataclass
class StreamResult:
    peak_concurrent: int
    streams: int
    errors: int
    out_of_order: int
    first_byte_p50_ms: float
    first_byte_p99_ms: float
    wall_seconds: float


@dataclass
class Concurrency:
    open: int = 0
    peak: int = 0


async def _one_stream(
    host: str, port: int, path: str, chunks: int, delay: float, gauge: Concurrency
) -> tuple[float, bool]:
    await asyncio.sleep(delay)
    gauge.open += 1
    gauge.peak = max(gauge.peak, gauge.open)
    try:
        return await _stream_body(host, port, path, chunks)
    finally:
        gauge.open -= 1


async def _stream_body(host: str, port: int, path: str, chunks: int) -> tuple[float, bool]:
    """One streamed request on a raw connection: (first body byte ms, complete and in order).

    A bare socket reader rather than an HTTP client library, so the load
    generator spends as little of the shared two cores as it can.
    """
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(STREAM_REQUEST)}\r\nConnection: close\r\n\r\n".encode()
            + STREAM_REQUEST
        )
        received = b""
        first_byte: float | None = None
        while data := await reader.read(65536):
            received += data
            if first_byte is None and b"\r\n\r\n" in received:
                head, _, body = received.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
                if body:
                    first_byte = time.perf_counter() - started
    finally:
        writer.close()
    text = received.partition(b"\r\n\r\n")[2].decode()
    expected = [f"<{index}>" for index in range(chunks)]
    positions = [text.find(token) for token in expected]
    done = text.rfind("data: [DONE]")
    in_order = -1 not in positions and positions == sorted(positions) and done > positions[-1]
    return (first_byte or 0.0) * 1000, in_order


async def streams(url: str, count: int, chunks: int, ramp: float) -> StreamResult:
    """`count` streams whose starts are spread over `ramp` seconds; each lasts about
    chunks x 100 ms, so with ramp < that duration all of them are open at once."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    gauge = Concurrency()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            asyncio.wait_for(
                _one_stream(
                    parts.hostname, parts.port, parts.path, chunks, index * ramp / count, gauge
                ),
                timeout=60,
            )
            for index in range(count)
        ),
        return_exceptions=True,
    )
    wall = time.perf_counter() - started
    good = [r for r in results if isinstance(r, tuple)]
    firsts = sorted(r[0] for r in good)
    return StreamResult(
        peak_concurrent=gauge.peak,
        streams=count,
        errors=count - len(good),
        out_of_order=sum(1 for r in good if not r[1]),
        first_byte_p50_ms=statistics.median(firsts) if firsts else float("nan"),
        first_byte_p99_ms=firsts[int(len(firsts) * 0.99) - 1] if firsts else float("nan"),
        wall_seconds=wall,
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def print_stream_rows(sd: StreamResult, sg: StreamResult) -> None:
    label = f"{sd.streams} streams x 20 chunks"
    print(f"| {label}: errors | {sd.errors} | {sg.errors} | |")
    print(f"| {label}: out of order | {sd.out_of_order} | {sg.out_of_order} | |")
    print(
        f"| {label}: first byte p50 ms | {sd.first_byte_p50_ms:.1f} | {sg.first_byte_p50_ms:.1f} "
        f"| {sg.first_byte_p50_ms - sd.first_byte_p50_ms:+.1f} ms |"
    )
    print(
        f"| {label}: first byte p99 ms | {sd.first_byte_p99_ms:.1f} | {sg.first_byte_p99_ms:.1f} "
        f"| {sg.first_byte_p99_ms - sd.first_byte_p99_ms:+.1f} ms |"
    )
    print(f"| {label}: peak open at once | {sd.peak_concurrent} | {sg.peak_concurrent} | |")
    print(f"| {label}: wall s | {sd.wall_seconds:.2f} | {sg.wall_seconds:.2f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="wrk runs per target, alternating; medians shown"
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--big-streams", type=int, default=5000, help="0 skips the scenario")
    parser.add_argument(
        "--ramp", type=float, default=1.0, help="seconds over which the streams start"
    )
    parser.add_argument("--log-level", default="INFO", help="the gateway's LOG_LEVEL")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (make bench installs Debian's wrk package)")

    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    backend_port, gateway_port = free_port(), free_port()
    env = gateway_environment(
        workdir,
        gateway_port,
        LOG_LEVEL=arguments.log_level,
        WORKERS="1",
        HEALTH_CHECK_INTERVAL_SECONDS="60",
        BACKEND_MAX_CONNECTIONS=str(max(arguments.streams, arguments.big_streams) + 100),
    )
    backend = start(
        [sys.executable, "-m", "bench.backend", "--port", str(backend_port)],
        env,
        workdir / "backend.log",
    )
    gateway = start([str(BIN / "gateway")], env, workdir / "gateway.stdout")
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    direct = f"http://127.0.0.1:{backend_port}/v1/chat/completions"
    proxied = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    try:
        register_bench_backend(gateway_port, backend_port)
        deadline = time.monotonic() + 10
        while httpx.post(proxied, content=REQUEST).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway never routed to the bench backend")
            time.sleep(0.1)

        rows: list[tuple[str, Any, Any]] = []
        for connections in (64, 256, 1):
            wrk(direct, connections, 2, script)  # warm-up
            wrk(proxied, connections, 2, script)
            rounds_direct, rounds_gateway = [], []
            for _ in range(arguments.rounds):  # alternating, so both see the same noise
                rounds_direct.append(wrk(direct, connections, arguments.seconds, script))
                rounds_gateway.append(wrk(proxied, connections, arguments.seconds, script))
            rows.append(
                (f"{connections} conn", median_of(rounds_direct), median_of(rounds_gateway))
            )

        rss_before = rss_mib(gateway.pid)
        stream_rows = [
            (
                uvloop.run(streams(direct, arguments.streams, 20, arguments.ramp)),
                uvloop.run(streams(proxied, arguments.streams, 20, arguments.ramp)),
            )
        ]
        peak = peak_rss_mib(gateway.pid)
        if arguments.big_streams:
            stream_rows.append(
                (
                    uvloop.run(streams(direct, arguments.big_streams, 20, arguments.ramp * 2)),
                    uvloop.run(streams(proxied, arguments.big_streams, 20, arguments.ramp * 2)),
                )
            )
        big_peak = peak_rss_mib(gateway.pid)
    finally:
        stop(gateway)
        stop(backend)

    today = time.strftime("%Y-%m-%d")
    print(f"\n## make bench ({today}, {os.cpu_count()} cores, one gateway worker)\n")
    print(
        f"wrk: {arguments.rounds} alternating runs of {arguments.seconds} s per target; "
        "each figure is the median of its runs, errors the total.\n"
    )
    print("| scenario | direct | gateway | ratio / added |")
    print("|---|---|---|---|")
    for label, d, g in rows:
        print(
            f"| {label}: requests/s | {d.requests_per_second:,.0f} | {g.requests_per_second:,.0f} "
            f"| {g.requests_per_second / d.requests_per_second:.2f}x |"
        )
        print(
            f"| {label}: p50 ms | {d.p50_ms:.2f} | {g.p50_ms:.2f} | {g.p50_ms - d.p50_ms:+.2f} ms |"
        )
        print(
            f"| {label}: p99 ms | {d.p99_ms:.2f} | {g.p99_ms:.2f} | {g.p99_ms - d.p99_ms:+.2f} ms |"
        )
        print(f"| {label}: errors | {d.errors} | {g.errors} | |")
    for sd, sg in stream_rows:
        print_stream_rows(sd, sg)
    print(f"| gateway memory MiB (before streams / peak) | | {rss_before:.0f} / {peak:.0f} | |")
    if arguments.big_streams:
        label = f"gateway memory MiB (peak with {arguments.big_streams} streams)"
        print(f"| {label} | | {big_peak:.0f} | |")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
