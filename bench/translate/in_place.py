"""What translation costs inside a real gateway under load, timed where it runs (#24).

    python -m bench.translate.in_place [--rounds 8] [--requests 400] [--connections 16]

The end-to-end figure (gateway.py: a process's CPU per request, a stream about
2,700 µs of it) moves by hundreds of µs from round to round on this shared
machine, more than translation costs. So here the pure functions are timed
where they run, in one gateway (one worker) over the OpenAI-only backend: the
gateway is started by this module's `serve`, which wraps them with a clock
before it runs `gateway.main`:

- translated: the request's document read and translated, its body written,
  the answer translated and written, a stream's translator made, and each of
  its runs fed and its end (the functions of gateway/proxy/translated.py and
  gateway/translate/);
- direct: what a direct stream runs instead on each run of events (the usage
  the gateway asked for taken out, gateway/accounting/stream_usage.py).

A stream's runs (fed to its translator, or the direct one's) are also shown
alone.

Each round sends exactly `--requests` of each case (`--connections` at a time)
and reads the clocks' totals before and after (SIGUSR1 makes the gateway write
them); a case's figure is its total over its requests, less what the clock
itself costs (measured in the gateway at its start, per timed call). What
translation adds to a request is its translated figure minus the direct one.
The timing sees the caches as the gateway leaves them between events (the
other streams, the event loop, the sockets), which a tight loop does not.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import free_port, gateway_environment, register_bench_backend, start, stop
from bench.translate.gateway import CASES, Case, check, exactly

TIMINGS_VARIABLE = "BENCH_TIMINGS_FILE"


class Clocks:
    """Time spent in the wrapped functions, in ns, and the number of timed calls."""

    def __init__(self) -> None:
        self.spent = {"translated": 0, "direct": 0, "runs": 0}
        self.calls = {"translated": 0, "direct": 0, "runs": 0}
        self.overhead_ns = 0.0
        self.depth = [0]

    def timed(self, kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function`, timed; a timed call within another is counted in the outer one."""
        clock = time.perf_counter_ns
        spent, calls, depth = self.spent, self.calls, self.depth

        def run(*arguments: Any) -> Any:
            depth[0] += 1
            began = clock()
            try:
                return function(*arguments)
            finally:
                ended = clock()
                depth[0] -= 1
                if not depth[0]:
                    spent[kind] += ended - began
                calls[kind] += 1

        return run

    def calibrate(self) -> None:
        """What a timed call of nothing costs, by itself (the median of a few runs)."""
        saved = dict(self.spent), dict(self.calls)
        noop = self.timed("direct", lambda *arguments: None)
        runs = []
        for _ in range(5):
            self.spent["direct"] = 0
            for _ in range(20_000):
                noop()
            runs.append(self.spent["direct"] / 20_000)
        self.overhead_ns = statistics.median(runs)
        self.spent, self.calls = saved

    def write(self, path: str) -> None:
        figures = {"spent": self.spent, "calls": self.calls, "overhead_ns": self.overhead_ns}
        Path(path).write_text(json.dumps(figures))


def serve() -> None:
    """The gateway, with the translation's functions and the direct stream's own timed."""
    from gateway import main
    from gateway.proxy import forward, translated
    from gateway.translate import table

    clocks = Clocks()
    clocks.calibrate()
    translated.TRANSLATIONS.update(
        {
            path: dataclasses.replace(
                translation, request=clocks.timed("translated", translation.request)
            )
            for path, translation in table.TRANSLATIONS.items()
        }
    )
    for name in ("_document", "json_bytes", "dropped_header", "_translated_whole"):
        setattr(translated, name, clocks.timed("translated", getattr(translated, name)))
    make_stream = clocks.timed("translated", translated._translated_stream)

    def translated_stream(*arguments: Any) -> Any:
        answer = make_stream(*arguments)
        answer.rewrite = clocks.timed("runs", answer.rewrite)
        answer.closing = clocks.timed("translated", answer.closing)
        return answer

    translated._translated_stream = translated_stream
    forward.without_usage = clocks.timed("runs", forward.without_usage)  # type: ignore[attr-defined]
    path = os.environ[TIMINGS_VARIABLE]
    signal.signal(signal.SIGUSR1, lambda *_: clocks.write(path))
    main.main()


def read_clocks(pid: int, path: Path) -> dict[str, Any]:
    """The gateway's totals now (it writes them on SIGUSR1)."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not write its clocks")
        time.sleep(0.01)
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


def per_request(before: dict[str, Any], after: dict[str, Any], kind: str, count: int) -> float:
    """µs of a kind's functions per request, the clock's own cost taken out."""
    spent = after["spent"][kind] - before["spent"][kind]
    calls = after["calls"][kind] - before["calls"][kind]
    return (spent - calls * after["overhead_ns"]) / count / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.002, help="s between stream events")
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-in-place-"))
    timings = workdir / "clocks.json"
    processes = []
    try:
        backend_port = free_port()
        command = ["-m", "bench.translate.backend", "--port", str(backend_port)]
        command += ["--interval", str(arguments.interval)]
        processes.append(
            start([sys.executable, *command], dict(os.environ), workdir / "backend.log")
        )
        port = free_port()
        env = gateway_environment(
            workdir, port, WORKERS="1", LOG_LEVEL="INFO", HEALTH_CHECK_INTERVAL_SECONDS="60"
        )
        env[TIMINGS_VARIABLE] = str(timings)
        gateway = start(
            [sys.executable, "-m", "bench.translate.in_place", "serve"], env, workdir / "gw.log"
        )
        processes.append(gateway)
        register_bench_backend(port, backend_port)
        figures, fed = measure(port, gateway.pid, timings, arguments)
        report(figures, fed, arguments)
    finally:
        for process in reversed(processes):
            stop(process)


def measure(
    port: int, pid: int, timings: Path, arguments: argparse.Namespace
) -> tuple[dict[Case, list[float]], dict[Case, list[float]]]:
    """Each case's µs per request (translated functions, or the direct stream's), by round;
    and of it, what its stream's runs cost (fed to the translator, or the direct one's)."""
    for case in CASES:
        check(port, case)
    figures: dict[Case, list[float]] = {case: [] for case in CASES}
    fed: dict[Case, list[float]] = {case: [] for case in CASES}
    for round_number in range(arguments.rounds):
        order = CASES[round_number % len(CASES) :] + CASES[: round_number % len(CASES)]
        for case in order:
            url = f"http://127.0.0.1:{port}{case.path}"
            before = read_clocks(pid, timings)
            body = case.body(case.stream)
            errors = asyncio.run(exactly(url, body, arguments.requests, arguments))
            if errors:
                raise RuntimeError(f"{case.label}: {errors} requests failed")
            after = read_clocks(pid, timings)
            kind = "direct" if case.path == "/v1/chat/completions" else "translated"
            runs = per_request(before, after, "runs", arguments.requests)
            figures[case].append(per_request(before, after, kind, arguments.requests) + runs)
            fed[case].append(runs)
    return figures, fed


def report(
    figures: dict[Case, list[float]], fed: dict[Case, list[float]], arguments: argparse.Namespace
) -> None:
    print(
        f"{arguments.rounds} rounds of {arguments.requests} requests per case, "
        f"{arguments.connections} connections, events {arguments.interval * 1000:g} ms apart; "
        "µs per request, medians over the rounds (min..max)"
    )
    print("| case | timed functions | of which the stream's runs | added by translation |")
    print("|---|---|---|---|")
    for case in CASES:
        rounds = figures[case]
        direct = next(c for c in CASES if c.stream == case.stream)
        added = ""
        if case is not direct:
            pairs = [a - d for a, d in zip(rounds, figures[direct], strict=True)]
            added = f"{statistics.median(pairs):.1f} ({min(pairs):.1f}..{max(pairs):.1f})"
        spread = f"{min(rounds):.1f}..{max(rounds):.1f}"
        runs = f"{statistics.median(fed[case]):.1f}" if case.stream else ""
        print(f"| {case.label} | {statistics.median(rounds):.1f} ({spread}) | {runs} | {added} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        main()
