"""Two real vLLM instances behind the gateway under `auto`: a conversation stays on one.

Both serve the same tiny model (built as in test_vllm.py), with vLLM's prefix
caching. A multi-turn chat through the gateway must land every turn on one
instance, and that instance's own counter, `vllm:prefix_cache_hits_total`, must
show the later turns found their beginning cached; the other instance got none
of it. The gateway reads both instances' `/metrics` (the load it routes on).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from shared.db import upgrade_to_head
from tests.conformance.test_vllm import model, register, start_vllm, stop
from tests.support import GatewayProcess, process_settings, start_healthd

__all__ = ["model"]  # the fixture, shared with test_vllm.py
# Long enough to fill a cache block or two, short enough for three turns in the tiny
# model's 512 tokens (its tokenizer, trained on a few sentences, cuts words small).
SYSTEM = " ".join(f"rule {n}: answer briefly and politely." for n in range(5))
_HITS = re.compile(r"^vllm:prefix_cache_hits(?:_total)?\{[^}]*\} ([0-9.e+]+)$", re.M)


def prefix_hits(server: str) -> float:
    return sum(float(value) for value in _HITS.findall(httpx.get(f"{server}/metrics").text))


@pytest.fixture(scope="module")
def pair(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    logs = tmp_path_factory.mktemp("vllm-pair")
    started = [start_vllm(model, logs / f"vllm-{n}.log", "--enable-prefix-caching") for n in (1, 2)]
    yield [url for _, url in started]
    for process, _ in started:
        stop(process)


@pytest.fixture(scope="module")
def gateway(pair: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gateway-auto")
    database_url = f"sqlite:///{workdir / 'registry.db'}"
    upgrade_to_head(database_url)
    settings = process_settings(
        workdir,
        database_url,
        HEALTH_CHECK_INTERVAL_SECONDS="1",
        ROUTING_STRATEGY="auto",
        SLOW_START_SECONDS="0",
    )
    with GatewayProcess(workdir, settings) as process:
        healthd = start_healthd(workdir, settings)
        try:
            for server in pair:
                register(process.url, server)
            yield process.url
        finally:
            healthd.send_signal(signal.SIGTERM)
            healthd.wait(timeout=20)


def test_a_conversation_lands_on_one_instance_and_hits_its_prefix_cache(
    pair: list[str], gateway: str, model: Path
) -> None:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120)
    before = [prefix_hits(server) for server in pair]
    messages = [{"role": "system", "content": SYSTEM}]
    served = set()
    for turn in range(3):
        messages.append({"role": "user", "content": f"question {turn} about the sea"})
        answer = client.chat.completions.with_raw_response.create(
            model=str(model), messages=messages, max_tokens=8, temperature=0
        )
        served.add(answer.headers["x-gateway-server-id"])
        content = answer.parse().choices[0].message.content or ""
        messages.append({"role": "assistant", "content": content})
    assert len(served) == 1, "the conversation moved between instances"
    gained = [prefix_hits(server) - hits for server, hits in zip(pair, before, strict=True)]
    assert sorted(gained)[0] == 0, f"both instances saw the conversation: {gained}"
    assert sorted(gained)[1] > 0, f"no prefix cache hits on the instance that had it: {gained}"
