"""The fair queue's figure (#20): a light client's latency on a full pool, against an idle one.

    python -m bench.fair_share [--heavy 40] [--samples 30] [--service 0.2]

One backend answers every request in `--service` seconds and takes 4 at a time
(`max_concurrent` 4); a real gateway process is in front. First the light
client alone sends `--samples` requests one after the other (the idle figure);
then a heavy client keeps `--heavy` requests in flight while the light client
sends as many again. The two clients are told apart by their address
(127.0.0.2 and 127.0.0.3: the queue's client without keys), all on loopback.
Printed: latency (wait + service) and wait (latency - service) at p50 and p99
for the idle pool, the light and the heavy client, and the light/idle ratio of
the p50 latency (within 2x is the issue's bound). tests/gateway/admission/
test_fair_share.py runs `measure` against the same setup, and asserts the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.run import ADMIN_KEY, BIN, free_port, gateway_environment, start, stop, wait_http

HEAVY_ADDRESS = "127.0.0.2"
LIGHT_ADDRESS = "127.0.0.3"
CAPACITY = 4


def body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Figures:
    service: float
    idle: list[float]
    light: list[float]
    heavy: list[float]
    refused: int  # answers other than 200 (none expected)

    @property
    def ratio(self) -> float:
        """The light client's p50 latency on the full pool over the idle pool's."""
        return statistics.median(self.light) / statistics.median(self.idle)

    def lines(self) -> list[str]:
        rows = [f"service time {self.service * 1000:.0f} ms, pool capacity {CAPACITY}"]
        for name, values in (("idle", self.idle), ("light", self.light), ("heavy", self.heavy)):
            p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            rows.append(
                f"{name:>5} ({len(values):>4} requests): latency p50 {p50 * 1000:7.1f} ms "
                f"p99 {p99 * 1000:7.1f} ms | wait p50 {(p50 - self.service) * 1000:7.1f} ms "
                f"p99 {(p99 - self.service) * 1000:7.1f} ms"
            )
        rows.append(f"light p50 / idle p50: {self.ratio:.2f}x; refused: {self.refused}")
        return rows


def client(address: str, connections: int) -> httpx.AsyncClient:
    """A client whose connections come from `address` (a loopback address of its own)."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=address),
        limits=httpx.Limits(max_connections=connections),
        timeout=60,
    )


async def one_by_one(
    http: httpx.AsyncClient, url: str, model: str, samples: int, refused: list[int]
) -> list[float]:
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = await http.post(url, json=body(model))
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            refused.append(answer.status_code)
    return latencies


async def measure(
    gateway_url: str, model: str, *, service: float, heavy: int = 40, samples: int = 30
) -> Figures:
    """The idle figure, then the light client's beside a heavy one keeping `heavy` in flight."""
    url = f"{gateway_url}/v1/chat/completions"
    refused: list[int] = []
    heavy_latencies: list[float] = []
    async with client(LIGHT_ADDRESS, 1) as light, client(HEAVY_ADDRESS, heavy) as crowd:
        idle = await one_by_one(light, url, model, samples, refused)
        stopping = asyncio.Event()

        async def keep_asking() -> None:
            while not stopping.is_set():
                started = time.perf_counter()
                answer = await crowd.post(url, json=body(model))
                heavy_latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    refused.append(answer.status_code)

        workers = [asyncio.create_task(keep_asking()) for _ in range(heavy)]
        try:
            # Full, with a queue behind it: the heavy client's first round is through.
            while len(heavy_latencies) < CAPACITY:
                await asyncio.sleep(service / 4)
            loaded = await one_by_one(light, url, model, samples, refused)
        finally:
            stopping.set()
            await asyncio.gather(*workers, return_exceptions=True)
    return Figures(service, idle, loaded, heavy_latencies, len(refused))


def register(gateway_url: str, model: str, backend_url: str, admin_key: str = ADMIN_KEY) -> None:
    """The backend as the only one of `model`, CAPACITY requests at a time."""
    httpx.post(
        f"{gateway_url}/admin/register",
        json={"model_name": model, "endpoint_url": backend_url, "max_concurrent": CAPACITY},
        headers={"X-API-Key": admin_key},
        timeout=30,
    ).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heavy", type=int, default=40)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--service", type=float, default=0.2)
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="answers take service +- this share"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fair-share-") as folder:
        workdir = Path(folder)
        backend_port, gateway_port = free_port(), free_port()
        env = gateway_environment(workdir, gateway_port)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            processes.append(
                start(
                    [
                        str(BIN / "python"),
                        "-m",
                        "bench.backend",
                        f"--port={backend_port}",
                        f"--delay={arguments.service}",
                        f"--jitter={arguments.jitter}",
                    ],
                    env,
                    workdir / "backend.log",
                )
            )
            processes.append(start([str(BIN / "gateway")], env, workdir / "gateway.log"))
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            wait_http(f"http://127.0.0.1:{backend_port}/v1/models")
            wait_http(f"{gateway_url}/health")
            register(gateway_url, "bench", f"http://127.0.0.1:{backend_port}")
            figures = asyncio.run(
                measure(
                    gateway_url,
                    "bench",
                    service=arguments.service,
                    heavy=arguments.heavy,
                    samples=arguments.samples,
                )
            )
        finally:
            for process in reversed(processes):
                stop(process)
    for line in figures.lines():
        print(line)


if __name__ == "__main__":
    main()
