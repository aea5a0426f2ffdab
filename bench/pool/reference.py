"""The reference router: a client that knows each server's queue, speed and conversations.

It reads every server's `/metrics` every SCRAPE_SECONDS (and counts what it sent
since), remembers which server served each conversation, and sends a turn back
there unless that server's load per unit of speed is more than STICKY_FACTOR
times the best one's; a new conversation goes to the least loaded per unit of
speed. It is simple on purpose: the gateway's `auto` is meant to beat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import httpx

SCRAPE_SECONDS = 0.05
STICKY_FACTOR = 2.0
_GAUGE = re.compile(r"^(vllm:num_requests_(?:running|waiting))\{[^}]*\} ([0-9.]+)$", re.M)


class ReferenceRouter:
    def __init__(self, urls: list[str], speeds: list[float]) -> None:
        self.urls = urls
        self.speeds = speeds
        self.reported = [0.0] * len(urls)
        self.sent_since = [0] * len(urls)
        self.home: dict[int, int] = {}

    def _score(self, index: int) -> float:
        return (self.reported[index] + self.sent_since[index] + 1) / self.speeds[index]

    async def route(self, conversation: int) -> str:
        best = min(range(len(self.urls)), key=self._score)
        home = self.home.get(conversation)
        chosen = best
        if home is not None and self._score(home) <= STICKY_FACTOR * self._score(best):
            chosen = home
        self.home[conversation] = chosen
        self.sent_since[chosen] += 1
        return self.urls[chosen] + "/v1/chat/completions"

    async def scrape_forever(self, client: httpx.AsyncClient) -> None:
        while True:
            for index, url in enumerate(self.urls):
                with contextlib.suppress(httpx.HTTPError):
                    text = (await client.get(url + "/metrics")).text
                    self.reported[index] = sum(float(v) for _, v in _GAUGE.findall(text))
                    self.sent_since[index] = 0
            await asyncio.sleep(SCRAPE_SECONDS)
