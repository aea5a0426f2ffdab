"""What translation costs a typical chat, in CPU µs per request (#24: under 100 µs).

    python -m bench.translate [--rounds 2000]

A micro-benchmark of the pure functions the proxy runs for an Ollama or
Anthropic request over an OpenAI backend: the request parsed, translated and
written (gateway/proxy/translated.py parses the body again; that is counted),
the answer parsed, translated and written, and for a stream its 40 events of
one token each, fed in runs as the relay hands them over, to the final
records. The forwarding around it is the same as for any chat (bench/ab.py).
Medians over `--rounds` runs, one process, no I/O.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from gateway.translate.table import TRANSLATIONS, Exchange

SYSTEM = "You are a helpful assistant. Answer in two sentences."
HISTORY = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And what river runs through it? Tell me about its history."},
]
OLLAMA_CHAT = {
    "model": "llama3.2:latest",
    "messages": [{"role": "system", "content": SYSTEM}, *HISTORY],
    "options": {"temperature": 0.7, "num_predict": 128},
}
ANTHROPIC_MESSAGES = {
    "model": "llama3.2:latest",
    "max_tokens": 128,
    "system": SYSTEM,
    "messages": HISTORY,
}
WORDS = ("The Seine runs through Paris; its banks are a UNESCO World Heritage Site. " * 4).split()
ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1733300000,
        "model": "llama3.2:latest",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(WORDS)},
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 61, "completion_tokens": 40, "total_tokens": 101},
    }
).encode()


def _event(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1733300000,
        "model": "llama3.2:latest",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


USAGE = {"prompt_tokens": 61, "completion_tokens": 40, "total_tokens": 101}
STREAM = [
    _event({"role": "assistant", "content": ""}),
    *(_event({"content": f" {word}"}) for word in WORDS),
    _event({}, "stop"),
    b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\n",
    b"data: [DONE]\n\n",
]


def whole(path: str, body: bytes) -> Callable[[], None]:
    translation = TRANSLATIONS[path]

    def run() -> None:
        document = json.loads(body)
        request = translation.request(document)
        json.dumps(request.document, ensure_ascii=False).encode()
        exchange = Exchange(document["model"], 0.0, 1733300000.0)
        answer = translation.answer(json.loads(ANSWER), exchange, 1.0)
        json.dumps(answer, ensure_ascii=False).encode()

    return run


def streamed(path: str, body: bytes) -> Callable[[], None]:
    translation = TRANSLATIONS[path]
    assert translation.stream is not None
    start = translation.stream

    def run() -> None:
        document = json.loads(body)
        request = translation.request({**document, "stream": True})
        json.dumps(request.document, ensure_ascii=False).encode()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    ollama_body = json.dumps(OLLAMA_CHAT).encode()
    anthropic_body = json.dumps(ANTHROPIC_MESSAGES).encode()
    cases = {
        "ollama /api/chat, whole answer": whole("/api/chat", ollama_body),
        "ollama /api/chat, streamed (42 events)": streamed("/api/chat", ollama_body),
        "anthropic /v1/messages, whole answer": whole("/v1/messages", anthropic_body),
        "anthropic /v1/messages, streamed (42 events)": streamed("/v1/messages", anthropic_body),
    }
    for name, run in cases.items():
        median = median_us(run, rounds)
        per_event = f" ({median / len(STREAM):.1f} per event)" if "streamed" in name else ""
        print(f"{name:46} {median:6.1f} µs per request (median){per_event}")


if __name__ == "__main__":
    main()
