"""A key's limit across worker processes: is 60 requests a minute 60 with WORKERS=4?

    python -m bench.key_limits [--workers 4] [--per-minute 60] [--requests 240]

Starts the bench backend and a gateway with WORKERS workers, issues one key of
`--per-minute` requests a minute, and sends `--requests` requests as fast as 16
threads can, each on a new connection (so the kernel spreads them over the
workers). Prints how many were let through, against the limit plus what the
bucket refilled meanwhile (one every 60/n seconds): the error bound is that
difference. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.ab import issue_bench_key
from bench.run import (
    REQUEST,
    free_port,
    gateway_environment,
    register_bench_backend,
    start,
    stop,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--per-minute", type=int, default=60)
    parser.add_argument("--requests", type=int, default=240)
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-key-limits-"))
    backend_port, gateway_port = free_port(), free_port()
    processes = []
    try:
        processes.append(
            start(
                [sys.executable, "-m", "bench.backend", "--port", str(backend_port)],
                {**os.environ},
                workdir / "backend.log",
            )
        )
        env = gateway_environment(workdir, gateway_port, WORKERS=str(arguments.workers))
        processes.append(
            start([str(Path(sys.executable).parent / "gateway")], env, workdir / "gw.log")
        )
        register_bench_backend(gateway_port, backend_port)
        key = issue_bench_key(env["DATABASE_URL"], {"requests_per_minute": arguments.per_minute})
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        me = f"http://127.0.0.1:{gateway_port}/v1/me"
        deadline = time.monotonic() + 10
        while httpx.get(me, headers=auth).status_code != 200:  # every worker knows it
            if time.monotonic() > deadline:
                raise RuntimeError("the key was never honoured")
            time.sleep(0.1)
        time.sleep(1)  # the other workers' polls too

        def send(_: int) -> int:
            with httpx.Client(timeout=30) as client:  # a new connection each time
                return client.post(url, content=REQUEST, headers=auth).status_code

        began = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(send, range(arguments.requests)))
        seconds = time.monotonic() - began
        refilled = seconds * arguments.per_minute / 60
        allowed = statuses.count(200)
        print(
            json.dumps(
                {
                    "workers": arguments.workers,
                    "limit_per_minute": arguments.per_minute,
                    "sent": arguments.requests,
                    "seconds": round(seconds, 2),
                    "let_through": allowed,
                    "refused_429": statuses.count(429),
                    "other": len(statuses) - allowed - statuses.count(429),
                    "bound": round(arguments.per_minute + refilled, 1),
                }
            )
        )
    finally:
        for process in reversed(processes):
            stop(process)


if __name__ == "__main__":
    main()
