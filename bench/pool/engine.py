"""A vLLM-like engine, simulated: continuous batching over a paged KV cache with prefix caching.

What it models, because routing depends on it:
- a prompt is split into blocks of BLOCK_TOKENS tokens, each named by the hash of
  everything before it and itself (vLLM's prefix-caching key), so two prompts that
  share a beginning share its blocks;
- blocks of finished requests stay cached (unpinned) and are evicted least recently
  used first when a new request needs room; a request's own blocks are pinned;
- each engine step admits waiting requests while there are batch slots and room in
  the KV cache, prefills their uncached tokens (PREFILL_SECONDS_PER_TOKEN each), and
  decodes one token for every running request (a step costs DECODE_STEP_SECONDS plus
  DECODE_SECONDS_PER_SEQUENCE per running request: decoding slows as the batch grows);
- everything is divided by the server's speed factor.
Counters and gauges carry vLLM's metric names.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

BLOCK_TOKENS = 16
DECODE_STEP_SECONDS = 0.012
DECODE_SECONDS_PER_SEQUENCE = 0.0015
PREFILL_SECONDS_PER_TOKEN = 0.0002
MAX_RUNNING = 24


def block_hashes(tokens: list[str]) -> list[bytes]:
    """The prefix-cache key of each whole block: a hash chained over the blocks before it."""
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        block = " ".join(tokens[start : start + BLOCK_TOKENS]).encode()
        previous = hashlib.blake2b(previous + block, digest_size=12).digest()
        hashes.append(previous)
    return hashes


@dataclass
class Sequence:
    """One request in the engine."""

    prompt: list[str]
    max_tokens: int
    tokens: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    generated: list[str] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)  # pinned while it runs
    reserved: int = 0  # blocks held for tokens not yet hashed (the tail and the output)


class KVCache:
    """Blocks by prefix hash: pinned (in use, counted) or cached (free, LRU order)."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks
        self.pinned: dict[bytes, int] = {}
        self.cached: OrderedDict[bytes, None] = OrderedDict()
        self.reserved = 0

    @property
    def used(self) -> int:
        return len(self.pinned) + self.reserved

    def cached_prefix(self, hashes: list[bytes]) -> int:
        """How many leading blocks are in the cache (pinned or not)."""
        count = 0
        for block in hashes:
            if block in self.pinned or block in self.cached:
                count += 1
            else:
                break
        return count

    def fits(self, new_blocks: int) -> bool:
        return self.used + new_blocks <= self.capacity

    def pin(self, hashes: list[bytes], reserve: int) -> None:
        for block in hashes:
            self.cached.pop(block, None)
            self.pinned[block] = self.pinned.get(block, 0) + 1
        self.reserved += reserve
        self._evict()

    def release(self, hashes: list[bytes], reserve: int, keep: list[bytes]) -> None:
        """A sequence ended: its blocks (and those its output completed, `keep`) stay cached."""
        self.reserved -= reserve
        for block in hashes:
            count = self.pinned[block] - 1
            if count:
                self.pinned[block] = count
            else:
                del self.pinned[block]
                self.cached[block] = None
                self.cached.move_to_end(block)
        for block in keep:
            if block not in self.pinned:
                self.cached[block] = None
                self.cached.move_to_end(block)
        self._evict()

    def _evict(self) -> None:
        while self.cached and self.used + len(self.cached) > self.capacity:
            self.cached.popitem(last=False)


@dataclass
class Counters:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    requests: int = 0


class Engine:
    """One server's scheduler loop; `submit` a sequence, read its tokens as they come."""

    def __init__(self, speed: float, kv_blocks: int = 3000, max_running: int = MAX_RUNNING) -> None:
        self.speed = speed
        self.kv = KVCache(kv_blocks)
        self.max_running = max_running
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.counters = Counters()
        self._wake = asyncio.Event()

    def submit(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)
        self._wake.set()

    def cancel(self, sequence: Sequence) -> None:
        if sequence in self.waiting:
            self.waiting.remove(sequence)
        elif sequence in self.running:
            self._finish(sequence)

    def _admit(self) -> float:
        """Admit what fits; the seconds of prefill this step spends on them."""
        prefill = 0.0
        while self.waiting and len(self.running) < self.max_running:
            sequence = self.waiting[0]
            hashes = block_hashes(sequence.prompt)
            hit = self.kv.cached_prefix(hashes)
            total_blocks = -(-(len(sequence.prompt) + sequence.max_tokens) // BLOCK_TOKENS)
            new_blocks = len(hashes) - hit
            reserve = total_blocks - len(hashes)
            if not self.kv.fits(new_blocks + reserve) and self.running:
                break  # wait for room (vLLM would preempt; waiting is close enough)
            self.waiting.popleft()
            sequence.blocks = hashes
            sequence.reserved = reserve
            self.kv.pin(hashes, reserve)
            cached_tokens = hit * BLOCK_TOKENS
            self.counters.prefix_queries += len(sequence.prompt)
            self.counters.prefix_hits += cached_tokens
            self.counters.prompt_tokens += len(sequence.prompt)
            prefill += (len(sequence.prompt) - cached_tokens) * PREFILL_SECONDS_PER_TOKEN
            self.running.append(sequence)
        return prefill

    def _finish(self, sequence: Sequence) -> None:
        self.running.remove(sequence)
        everything = block_hashes(sequence.prompt + sequence.generated)
        self.kv.release(sequence.blocks, sequence.reserved, everything[len(sequence.blocks) :])
        sequence.tokens.put_nowait(None)
        self.counters.requests += 1

    async def run(self) -> None:
        """The step loop, until cancelled."""
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                await self._wake.wait()
            prefill = self._admit()
            step = DECODE_STEP_SECONDS + DECODE_SECONDS_PER_SEQUENCE * len(self.running)
            await asyncio.sleep((prefill + step) / self.speed)
            for sequence in list(self.running):
                token = f"o{len(sequence.generated)}x{len(sequence.prompt) % 997}"
                sequence.generated.append(token)
                sequence.tokens.put_nowait(token)
                self.counters.generation_tokens += 1
                if len(sequence.generated) >= sequence.max_tokens:
                    self._finish(sequence)

    def metrics(self, model: str) -> str:
        """Prometheus text with vLLM's names."""
        label = f'{{model_name="{model}"}}'
        c = self.counters
        lines = [
            f"vllm:num_requests_running{label} {len(self.running)}",
            f"vllm:num_requests_waiting{label} {len(self.waiting)}",
            f"vllm:kv_cache_usage_perc{label} {self.kv.used / self.kv.capacity:.4f}",
            f"vllm:prefix_cache_queries_total{label} {c.prefix_queries}",
            f"vllm:prefix_cache_hits_total{label} {c.prefix_hits}",
            f"vllm:prompt_tokens_total{label} {c.prompt_tokens}",
            f"vllm:generation_tokens_total{label} {c.generation_tokens}",
            f'vllm:request_success_total{{model_name="{model}",finished_reason="length"}} '
            f"{c.requests}",
        ]
        return "\n".join(lines) + "\n"
