"""What translation adds to a gateway's CPU time per request, end to end (#24: under 100 µs).

    python -m bench.translate.gateway [--build NAME=BIN_DIR ...] [--rounds 6]

One OpenAI-only backend (bench/translate/backend.py), and for each build (a
venv's bin folder; `python -m bench.build_at REV` makes one of another commit;
default: this checkout's) one gateway with one worker. The typical chat
(bench/translate/chat.py) is sent by wrk as OpenAI's chat completion (direct,
no translation), Ollama's /api/chat and Anthropic's /v1/messages (both
translated), whole and streamed (50 events 2 ms apart, each in a read of its
own, as a model's tokens come); each gateway's CPU time per request is read
around each wrk run: all of it (its threads' schedstat, in ns) and its user
share (clock ticks). Rounds alternate builds and cases, so all see the same
drift of this shared machine. What translation adds is, in each round, a
case's figure minus the direct figure of the same build and kind (whole or
streamed): its median over the rounds, and the spread of the rounds. A
stream's figures are about ten times a whole answer's, and so is their noise.

With `--requests N`, each round sends exactly N requests (`--connections` at a
time, from this process) instead of running wrk for `--seconds`: no stream is
cut at a round's end and left uncounted, which for streams of 100 ms was a few
per cent of a round's CPU time, and varied from round to round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.run import free_port, gateway_environment, register_bench_backend, start, stop, wrk
from bench.translate.chat import anthropic_request, ollama_request, openai_request

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[BODY]]
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
"""


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Callable[[bool], bytes]
    stream: bool

    @property
    def label(self) -> str:
        return f"{self.name} {'streamed' if self.stream else 'whole'}"


CASES = [
    Case(name, path, body, stream)
    for stream in (False, True)
    for name, path, body in (
        ("openai (direct)", "/v1/chat/completions", openai_request),
        ("ollama /api/chat", "/api/chat", ollama_request),
        ("anthropic /v1/messages", "/v1/messages", anthropic_request),
    )
]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CPU:
    """A process's CPU time so far, in µs: all of it, and in user space."""

    all: float  # /proc/PID/task/*/schedstat: ns, exact
    user: float  # /proc/PID/stat: clock ticks, sampled

    def __sub__(self, other: CPU) -> CPU:
        return CPU(self.all - other.all, self.user - other.user)


def cpu(pid: int) -> CPU:
    """The CPU time of a process's threads so far. Its user share leaves out the
    kernel's work on the sockets, the same for every case, and noisier."""
    every = sum(
        int((task / "schedstat").read_text().split()[0])
        for task in Path(f"/proc/{pid}/task").iterdir()
    )
    user = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11])
    return CPU(every / 1000, user * 1e6 / CLOCK_TICKS)


def check(port: int, case: Case) -> None:
    """The case answers 200 (for a translated path: translated, once the gateway learned
    that the backend lacks it), within a deadline."""
    url = f"http://127.0.0.1:{port}{case.path}"
    deadline = time.monotonic() + 15
    while True:
        answer = httpx.post(url, content=case.body(case.stream), timeout=10)
        if answer.status_code == 200 and (b"[DONE]" in answer.content) == (
            case.stream and case.path == "/v1/chat/completions"
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{case.label}: HTTP {answer.status_code} {answer.text[:200]}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--build",
        action="append",
        metavar="NAME=BIN_DIR",
        help="a build's name and bin folder (repeatable; default: this=.venv's bin)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.002, help="s between stream events")
    parser.add_argument("--only", choices=("whole", "streamed"), help="only these cases")
    parser.add_argument("--requests", type=int, help="exactly this many per round (not wrk)")
    arguments = parser.parse_args()
    builds = dict(
        item.split("=", 1) for item in arguments.build or [f"this={Path(sys.executable).parent}"]
    )
    cases = [c for c in CASES if arguments.only in (None, "streamed" if c.stream else "whole")]
    workdir = Path(tempfile.mkdtemp(prefix="gateway-translate-"))
    processes = []
    try:
        backend_port = free_port()
        command = ["-m", "bench.translate.backend", "--port", str(backend_port)]
        command += ["--interval", str(arguments.interval)]
        processes.append(
            start([sys.executable, *command], dict(os.environ), workdir / "backend.log")
        )
        gateways: dict[str, tuple[int, int]] = {}  # build -> (port, pid)
        for name, bin_dir in builds.items():
            folder = workdir / name
            folder.mkdir()
            port = free_port()
            env = gateway_environment(
                folder, port, WORKERS="1", LOG_LEVEL="INFO", HEALTH_CHECK_INTERVAL_SECONDS="60"
            )
            process = start([str(Path(bin_dir) / "gateway")], env, folder / "gateway.stdout")
            processes.append(process)
            register_bench_backend(port, backend_port)
            gateways[name] = (port, process.pid)
        used, errors = measure(gateways, cases, workdir, arguments)
        report(gateways, cases, used, arguments, errors)
    finally:
        for process in reversed(processes):
            stop(process)


def measure(
    gateways: dict[str, tuple[int, int]],
    cases: list[Case],
    workdir: Path,
    arguments: argparse.Namespace,
) -> tuple[dict[tuple[str, Case], list[CPU]], int]:
    """Each build's CPU per request in each case, round by round; and wrk's errors."""
    scripts = {}
    for case in cases:
        scripts[case] = workdir / f"{case.label.replace(' ', '_').replace('/', '')}.lua"
        scripts[case].write_text(WRK_SCRIPT.replace("BODY", case.body(case.stream).decode()))
        for port, _ in gateways.values():
            check(port, case)
            wrk(f"http://127.0.0.1:{port}{case.path}", arguments.connections, 1, scripts[case])
    used: dict[tuple[str, Case], list[CPU]] = {(b, c): [] for b in gateways for c in cases}
    errors = 0
    for round_number in range(arguments.rounds):
        names = list(gateways)
        names = names[round_number % len(names) :] + names[: round_number % len(names)]
        order = cases[round_number % len(cases) :] + cases[: round_number % len(cases)]
        for name in names:
            port, pid = gateways[name]
            for case in order:
                url = f"http://127.0.0.1:{port}{case.path}"
                before = cpu(pid)
                if arguments.requests:
                    body = case.body(case.stream)
                    errors += asyncio.run(exactly(url, body, arguments.requests, arguments))
                    requests = float(arguments.requests)
                else:
                    result = wrk(url, arguments.connections, arguments.seconds, scripts[case])
                    errors += result.errors
                    requests = max(1.0, result.requests_per_second * arguments.seconds)
                spent = cpu(pid) - before
                used[(name, case)].append(CPU(spent.all / requests, spent.user / requests))
    return used, errors


async def exactly(url: str, body: bytes, count: int, arguments: argparse.Namespace) -> int:
    """Send `count` requests, `--connections` at a time, each read to its end; the
    number that did not answer 200."""
    left = count
    failed = 0
    limits = httpx.Limits(max_connections=arguments.connections)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one_connection() -> None:
            nonlocal left, failed
            while left > 0:
                left -= 1
                async with client.stream("POST", url, content=body, headers=headers) as answer:
                    async for _ in answer.aiter_raw():
                        pass
                    failed += answer.status_code != 200

        await asyncio.gather(*(one_connection() for _ in range(arguments.connections)))
    return failed


def _added(rounds: list[float]) -> str:
    return f"{statistics.median(rounds):.0f} ({min(rounds):.0f}..{max(rounds):.0f})"


def report(
    gateways: dict[str, tuple[int, int]],
    cases: list[Case],
    used: dict[tuple[str, Case], list[CPU]],
    arguments: argparse.Namespace,
    errors: int,
) -> None:
    per_round = f"{arguments.requests} requests" if arguments.requests else f"{arguments.seconds} s"
    print(
        f"{arguments.rounds} rounds of {per_round} per case, "
        f"{arguments.connections} connections, events {arguments.interval * 1000:g} ms apart; "
        f"errors: {errors}; medians over the rounds (min..max)"
    )
    print("| build | case | CPU µs per request | user | added by translation | user |")
    print("|---|---|---|---|---|---|")
    for name in gateways:
        for case in cases:
            figures = used[(name, case)]
            direct = next(c for c in cases if c.stream == case.stream)
            added = ["", ""]
            if case is not direct:
                pairs = list(zip(figures, used[(name, direct)], strict=True))
                added = [_added([a.all - d.all for a, d in pairs])]
                added.append(_added([a.user - d.user for a, d in pairs]))
            every = statistics.median(f.all for f in figures)
            user = statistics.median(f.user for f in figures)
            print(f"| {name} | {case.label} | {every:.0f} | {user:.0f} | {' | '.join(added)} |")


if __name__ == "__main__":
    main()
