"""What a server says of its own load, read from what it publishes. Pure parsing, no I/O.

- vLLM `GET /metrics`: `vllm:num_requests_waiting`, `vllm:num_requests_running`,
  `vllm:kv_cache_usage_perc` (older versions: `vllm:gpu_cache_usage_perc`);
- SGLang `GET /metrics`: `sglang:num_queue_reqs`, `sglang:num_running_reqs`,
  `sglang:token_usage`;
- llama.cpp `GET /metrics` (with `--metrics`): `llamacpp:requests_processing`,
  `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`;
- Ollama `GET /api/ps`: the models loaded, their size in memory and expiry.

A server serving several models reports one line per model: they are summed
(the queue and the memory are the server's). Anything else (no such lines,
values that are not numbers, a body over MAX_REPORT_BYTES) is no report: routing
then falls back to the gateway's own counts for that server.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_REPORT_BYTES = 4 * 1024 * 1024  # vLLM's /metrics with its histograms is ~100-300 KB
# What each kind of server calls the three figures: (waiting, running, kv usage in 0..1).
METRIC_NAMES = {
    "vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"),
    "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"),
    "llamacpp": (
        "llamacpp:requests_deferred",
        "llamacpp:requests_processing",
        "llamacpp:kv_cache_usage_ratio",
    ),
}
OLD_VLLM_KV = "vllm:gpu_cache_usage_perc"


class BadReport(ValueError):
    """The server answered, but not with figures we can read."""


@dataclass(frozen=True)
class Report:
    """One server's load as it reported it, and when (monotonic seconds)."""

    at: float
    source: str  # "vllm", "sglang", "llamacpp" or "ollama"
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float | None = None  # 0..1
    loaded: frozenset[str] | None = None  # Ollama: the models in memory now
    expiring: float | None = None  # Ollama: seconds until the first loaded model unloads

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)


def _values(text: str, name: str) -> list[float]:
    """Every sample of metric `name` (any labels), found with str.find: a server's whole
    /metrics is never split into lines, only the few samples wanted are read."""
    found: list[float] = []
    start = 0
    while True:
        at = text.find(name, start)
        if at < 0:
            return found
        start = at + len(name)
        if at > 0 and text[at - 1] != "\n":
            continue  # inside another line (a HELP text, a longer name's suffix)
        follower = text[start : start + 1]
        if follower == "{":
            close = text.find("}", start)
            if close < 0:
                raise BadReport(f"{name}: unclosed labels")
            start = close + 1
        elif follower != " ":
            continue  # a longer name (`..._total`, `..._bucket`)
        end = text.find("\n", start)
        fields = text[start : end if end >= 0 else len(text)].split()
        if not fields:
            raise BadReport(f"{name}: no value")
        try:
            value = float(fields[0])
        except ValueError:
            raise BadReport(f"{name}: {fields[0][:40]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise BadReport(f"{name}: {fields[0][:40]!r} is out of range")
        found.append(value)


def parse_metrics(body: bytes, now: float) -> Report:
    """A Prometheus text page from vLLM, SGLang or llama.cpp; BadReport if it is none."""
    if len(body) > MAX_REPORT_BYTES:
        raise BadReport(f"the metrics page is over {MAX_REPORT_BYTES} bytes")
    text = body.decode("utf-8", "replace")
    for source, (waiting_name, running_name, kv_name) in METRIC_NAMES.items():
        running = _values(text, running_name)
        if not running:
            continue
        kv = _values(text, kv_name) or (_values(text, OLD_VLLM_KV) if source == "vllm" else [])
        return Report(
            at=now,
            source=source,
            waiting=sum(_values(text, waiting_name)),
            running=sum(running),
            kv_usage=min(1.0, max(kv)) if kv else None,
        )
    raise BadReport("the metrics page has no queue figures of vLLM, SGLang or llama.cpp")


def parse_ollama_ps(body: bytes, now: float) -> Report:
    """Ollama's `/api/ps`: which models are in memory (a name without a tag is `:latest`)."""
    if len(body) > MAX_REPORT_BYTES:
        raise BadReport(f"/api/ps is over {MAX_REPORT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadReport("/api/ps is not JSON") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise BadReport("/api/ps has no list of models")
    loaded = set()
    for entry in models:
        name = entry.get("name") or entry.get("model") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            loaded.add(name)
    return Report(at=now, source="ollama", loaded=frozenset(loaded))


def ollama_name(name: str) -> str:
    """`llama3` and `llama3:latest` are one model to Ollama."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def holds(report: Report, model: str) -> bool | None:
    """Whether the server has `model` in memory (None: it does not say)."""
    if report.loaded is None:
        return None
    wanted = ollama_name(model)
    return any(ollama_name(name) == wanted for name in report.loaded)
