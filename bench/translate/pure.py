"""What translation costs a typical chat, in CPU µs per request (#24: under 100 µs).

    python -m bench.translate [--rounds 2000]

A micro-benchmark of the pure functions the proxy runs for an Ollama or
Anthropic request over an OpenAI backend (the typical chat of chat.py): the
request translated and written (the endpoint parsed it to route it, as any
request), the answer parsed, translated and written, and for a stream its 54
events (50 of one token each), fed one by one as the relay hands them over,
to the final records. The forwarding around it is the same as for any chat;
gateway.py measures the whole, end to end. Medians over `--rounds` runs, one
process, no I/O.

A direct stream runs a pure function of its own on each run of events, which
a translated one does not: the usage the gateway asked for (the client did
not) taken out (gateway/accounting/stream_usage.py). What a translated stream
adds is its figure minus that one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from bench.translate.chat import (
    anthropic_request,
    ollama_request,
    stream_events,
    whole_answer,
)
from gateway.accounting.stream_usage import without_usage
from gateway.translate.common import json_bytes, json_text
from gateway.translate.table import TRANSLATIONS, Exchange

ANSWER = whole_answer()
STREAM = stream_events(with_usage=True)


def whole(path: str, body: bytes) -> Callable[[], None]:
    translation = TRANSLATIONS[path]

    document = json.loads(body)

    def run() -> None:
        request = translation.request(document)
        json_bytes(request.document)
        exchange = Exchange(document["model"], 0.0, 1733300000.0)
        answer = translation.answer(json.loads(ANSWER), exchange, 1.0)
        json_text(answer).encode()

    return run


def streamed(path: str, body: bytes) -> Callable[[], None]:
    translation = TRANSLATIONS[path]
    assert translation.stream is not None
    start = translation.stream

    document = json.loads(body)

    def run() -> None:
        request = translation.request(document)
        json_bytes(request.document)
        translator = start(Exchange(document["model"], 0.0, 1733300000.0), True)
        for event in STREAM:  # the relay hands over each event as it arrives
            translator.feed(event, 1.0)
        translator.close(None, 2.0)

    return run


def median_us(run: Callable[[], None], rounds: int) -> float:
    for _ in range(50):
        run()
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def direct_stream() -> None:
    """What the direct path runs on the same stream, and a translated one does not: the
    usage the gateway asked for (the client did not) taken out of each run."""
    for event in STREAM:
        without_usage(event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    events = len(STREAM)
    direct = median_us(direct_stream, rounds)
    print(
        f"{'openai (direct), streamed: usage taken out':46} {direct:6.1f} µs per request (median)"
    )
    cases = {
        "ollama /api/chat, whole answer": whole("/api/chat", ollama_request(False)),
        f"ollama /api/chat, streamed ({events} events)": streamed(
            "/api/chat", ollama_request(True)
        ),
        "anthropic /v1/messages, whole answer": whole("/v1/messages", anthropic_request(False)),
        f"anthropic /v1/messages, streamed ({events} events)": streamed(
            "/v1/messages", anthropic_request(True)
        ),
    }
    for name, run in cases.items():
        median = median_us(run, rounds)
        added = ""
        if "streamed" in name:
            added = f"; adds {median - direct:.1f} to the direct stream's"
        print(f"{name:46} {median:6.1f} µs per request (median){added}")


if __name__ == "__main__":
    main()
