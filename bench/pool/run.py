"""`make bench-pool`: every routing strategy, and a reference router, on a simulated pool.

Four vLLM-like servers (bench/pool/engine.py) at speeds 1, 1, 0.5 and 0.25 in one
process; multi-turn chats sharing long system prompts (bench/pool/workload.py),
the same ones for every strategy, at RATE requests per second. For each
strategy: fresh servers (empty caches), a fresh gateway (one worker,
ROUTING_STRATEGY set, the servers registered with weights 4, 4, 2, 1), the
workload through it, then the figures: time to first token (mean, p90, p99),
output tokens per second, the prefix-cache hit rate the servers report, and
each server's share of the requests. The reference router calls the servers
directly (bench/pool/reference.py).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop

from bench.pool.reference import ReferenceRouter
from bench.pool.workload import Run, Summary, conversations, converse, summarize
from bench.run import ADMIN_KEY, BIN, free_port, gateway_environment, start, stop, wait_http

MODEL = "sim"
SPEEDS = (1.0, 1.0, 0.5, 0.25)
STRATEGIES = ("round_robin", "least_loaded", "fastest_response", "weighted", "auto")
_COUNTER = re.compile(r"^(vllm:[a-z_]+)\{[^}]*\} ([0-9.]+)$", re.M)


@dataclass(frozen=True)
class Result:
    name: str
    summary: Summary
    hit_rate: float
    shares: tuple[float, ...]


async def counters(client: httpx.AsyncClient, urls: list[str]) -> list[dict[str, float]]:
    found = []
    for url in urls:
        text = (await client.get(url + "/metrics")).text
        found.append({name: float(value) for name, value in _COUNTER.findall(text)})
    return found


async def drive(
    name: str, urls: list[str], gateway: str | None, args: argparse.Namespace
) -> Result:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        before = await counters(client, urls)
        plan = conversations(args.seed, args.rate, args.seconds)
        reference = ReferenceRouter(urls, list(SPEEDS))
        scraper = None
        if gateway is None:
            scraper = asyncio.create_task(reference.scrape_forever(client))

            async def route(number: int) -> str:
                return await reference.route(number)
        else:
            target = gateway + "/v1/chat/completions"

            async def route(number: int) -> str:
                return target

        run = Run(began=time.perf_counter())
        stop_at = run.began + args.seconds
        await asyncio.gather(*(converse(client, c, route, MODEL, run, stop_at) for c in plan))
        if scraper is not None:
            scraper.cancel()
        after = await counters(client, urls)
    summary = summarize(run.samples, run.began + args.warmup, args.seconds - args.warmup)
    hits = sum(
        a["vllm:prefix_cache_hits_total"] - b["vllm:prefix_cache_hits_total"]
        for a, b in zip(after, before, strict=True)
    )
    queries = sum(
        a["vllm:prefix_cache_queries_total"] - b["vllm:prefix_cache_queries_total"]
        for a, b in zip(after, before, strict=True)
    )
    served = [
        a["vllm:request_success_total"] - b["vllm:request_success_total"]
        for a, b in zip(after, before, strict=True)
    ]
    total = sum(served) or 1
    return Result(name, summary, hits / (queries or 1), tuple(s / total for s in served))


def one(name: str, args: argparse.Namespace, workdir: Path) -> Result:
    ports = [free_port() for _ in SPEEDS]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    env_dir = workdir / name
    env_dir.mkdir()
    gateway_port = free_port()
    env = gateway_environment(
        env_dir,
        gateway_port,
        ROUTING_STRATEGY=name if name != "reference" else "round_robin",
        SLOW_START_SECONDS="0",
        WORKERS="1",
        LOG_LEVEL="WARNING",
        HEALTH_CHECK_INTERVAL_SECONDS="60",
    )
    sims = start(
        [
            sys.executable,
            "-m",
            "bench.pool.server",
            "--model",
            MODEL,
            "--speeds",
            ",".join(str(s) for s in SPEEDS),
            "--ports",
            ",".join(map(str, ports)),
        ],
        env,
        env_dir / "sims.log",
    )
    gateway = None
    try:
        for url in urls:
            wait_http(url + "/v1/models")
        if name != "reference":
            gateway = start([str(args.gateway_bin / "gateway")], env, env_dir / "gateway.log")
            base = f"http://127.0.0.1:{gateway_port}"
            wait_http(base + "/health")
            for url, speed in zip(urls, SPEEDS, strict=True):
                httpx.post(
                    base + "/admin/register",
                    json={"model_name": MODEL, "endpoint_url": url, "weight": int(speed * 4)},
                    headers={"X-API-Key": ADMIN_KEY},
                    timeout=30,
                ).raise_for_status()
            return uvloop.run(drive(name, urls, base, args))
        return uvloop.run(drive(name, urls, None, args))
    finally:
        if gateway is not None:
            stop(gateway)
        stop(sims)


def table(results: list[Result]) -> str:
    lines = [
        "| strategy | requests | errors | mean TTFT s | p90 TTFT s | p99 TTFT s "
        "| output tokens/s | hit rate | turns moved | share per server (speed 1/1/0.5/0.25) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary
        shares = " / ".join(f"{share:.0%}" for share in r.shares)
        lines.append(
            f"| {r.name} | {s.requests} | {s.errors} | {s.mean_ttft:.3f} | {s.p90_ttft:.3f} "
            f"| {s.p99_ttft:.3f} | {s.tokens_per_second:.0f} | {r.hit_rate:.3f} "
            f"| {s.moved:.0%} | {shares} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategies", default=",".join((*STRATEGIES, "reference")))
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each run")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds left out at start")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument(
        "--gateway-bin",
        type=Path,
        default=BIN,
        help="bin folder of the gateway build to run (python -m bench.build_at REV makes one)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-pool-"))
    results = []
    try:
        for name in args.strategies.split(","):
            results.append(one(name, args, workdir))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n## make bench-pool (rate {args.rate}/s, {args.seconds:g} s per run)\n")
    print(table(results))


if __name__ == "__main__":
    main()
