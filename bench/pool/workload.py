"""The pool benchmark's clients: multi-turn chats with shared system prompts.

Conversations arrive as a Poisson process; each has a few turns, each turn
waits for the previous answer (streamed) and a think time. The workload is
drawn from a seeded generator, so every strategy sees the same conversations
at the same times with the same words. Time to first token is measured at the
client, from sending to the first content event.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

SYSTEM_PROMPTS = 4
SYSTEM_WORDS = 500
USER_WORDS = (60, 160)
OUTPUT_TOKENS = (30, 90)
TURNS = (3, 8)
THINK_SECONDS = 1.5


@dataclass(frozen=True)
class Turn:
    user: str
    max_tokens: int
    think: float  # seconds before this turn is sent, after the previous answer


@dataclass(frozen=True)
class Conversation:
    number: int
    start: float  # seconds after the run began
    system: str
    turns: tuple[Turn, ...]


def words(rng: random.Random, count: int) -> str:
    return " ".join(f"w{rng.randrange(50_000)}" for _ in range(count))


def conversations(seed: int, rate: float, seconds: float) -> list[Conversation]:
    """Requests arriving at about `rate` per second over `seconds`, as conversations."""
    rng = random.Random(seed)
    systems = [words(random.Random(seed * 100 + n), SYSTEM_WORDS) for n in range(SYSTEM_PROMPTS)]
    mean_turns = sum(TURNS) / 2
    found: list[Conversation] = []
    at = 0.0
    while True:
        at += rng.expovariate(rate / mean_turns)
        if at >= seconds:
            return found
        turns = tuple(
            Turn(
                words(rng, rng.randint(*USER_WORDS)),
                rng.randint(*OUTPUT_TOKENS),
                0.0 if index == 0 else rng.expovariate(1 / THINK_SECONDS),
            )
            for index in range(rng.randint(*TURNS))
        )
        found.append(Conversation(len(found), at, rng.choice(systems), turns))


@dataclass
class Sample:
    """One request as the client saw it."""

    sent: float
    ttft: float | None
    tokens: int
    server: str | None
    error: str | None = None
    conversation: int = -1
    turn: int = 0


# Chooses the URL of the server a conversation's turn goes to (None: the gateway).
Router = Callable[[int], Awaitable[str]]
_CONTENT = re.compile(rb'"content": ?"([^"]*)"')


async def chat(
    client: httpx.AsyncClient, url: str, body: dict[str, object], headers: dict[str, str]
) -> tuple[Sample, str]:
    """One streamed chat turn; the sample and the answer's text."""
    sent = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    server = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            server = response.headers.get("x-gateway-server-id") or url
            if response.status_code != 200:
                await response.aread()
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                return Sample(sent, None, 0, server, error), ""
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                for choice in event.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        if ttft is None:
                            ttft = time.perf_counter() - sent
                        parts.append(text)
    except httpx.HTTPError as error:
        return Sample(sent, ttft, 0, server, f"{type(error).__name__}: {error}"), ""
    answer = "".join(parts)
    return Sample(sent, ttft, len(answer.split()), server), answer


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    began: float = 0.0


async def converse(
    client: httpx.AsyncClient,
    conversation: Conversation,
    route: Callable[[int], Awaitable[str]],
    model: str,
    run: Run,
    stop_at: float,
    served: Callable[[int, str | None], None] = lambda number, server: None,
) -> None:
    await asyncio.sleep(max(0.0, run.began + conversation.start - time.perf_counter()))
    messages: list[dict[str, str]] = [{"role": "system", "content": conversation.system}]
    for number, turn in enumerate(conversation.turns):
        await asyncio.sleep(turn.think)
        if time.perf_counter() >= stop_at:
            return
        messages.append({"role": "user", "content": turn.user})
        body = {"model": model, "messages": messages, "max_tokens": turn.max_tokens, "stream": True}
        url = await route(conversation.number)
        sample, answer = await chat(client, url, body, {})
        sample.conversation, sample.turn = conversation.number, number
        served(conversation.number, sample.server)
        run.samples.append(sample)
        if sample.error is not None:
            return
        messages.append({"role": "assistant", "content": answer})


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    mean_ttft: float
    p90_ttft: float
    p99_ttft: float
    tokens_per_second: float
    moved: float  # follow-up turns served elsewhere than the turn before


def moves(samples: list[Sample]) -> float:
    """The share of follow-up turns that went to another server than their previous turn."""
    last: dict[int, str | None] = {}
    follow_ups = moved = 0
    for sample in sorted(samples, key=lambda s: (s.conversation, s.turn)):
        if sample.turn > 0 and sample.conversation in last:
            follow_ups += 1
            moved += last[sample.conversation] != sample.server
        last[sample.conversation] = sample.server
    return moved / follow_ups if follow_ups else 0.0


def summarize(samples: list[Sample], after: float, seconds: float) -> Summary:
    """The requests sent `after` (perf_counter) onwards, the warm-up left out."""
    kept = [s for s in samples if s.sent >= after]
    ttfts = [s.ttft for s in kept if s.ttft is not None and s.error is None]
    return Summary(
        requests=len(kept),
        errors=sum(1 for s in kept if s.error is not None),
        mean_ttft=statistics.fmean(ttfts) if ttfts else float("nan"),
        p90_ttft=percentile(ttfts, 0.9),
        p99_ttft=percentile(ttfts, 0.99),
        tokens_per_second=sum(s.tokens for s in kept) / seconds,
        moved=moves(samples),
    )
