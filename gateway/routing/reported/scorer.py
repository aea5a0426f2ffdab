"""The `auto` strategy: which backend answers soonest, from what the servers report. Pure.

For each candidate the scorer estimates the request's time to first token, in
units of "one request's turn" divided by the server's speed:

- its queue: what the server reported (waiting, running), plus the requests
  this process sent it since (so a burst does not all land on the server that
  looked idle at the last scrape); a server with no fresh report counts what
  this process has in flight there (never "idle");
- a waiting request costs WAITING_WEIGHT: the new request waits behind it for
  a slot and its prefill; a running one RUNNING_WEIGHT: it only slows each
  decode step a little; one sent since the report counts as running if the
  server had none waiting then, as waiting otherwise; a request in flight to a
  server that reports nothing UNREPORTED_WEIGHT;
- the prompt's prefill: PREFILL_TOKENS_PER_UNIT tokens cost one unit (for a
  request with no affinity key: a conversation's turns go to its home, below,
  whose cache makes most of the prefill unnecessary);
- KV-cache pressure above KV_HIGH (new requests soon wait for memory);
- a model not in memory (Ollama): COLD_LOAD_UNITS, and EVICT_UNITS more when
  the server is busy with another model (loading ours may evict it).

The conversation's server (its "home") comes from the request's affinity key
by rendezvous hashing weighted by speed squared: every worker and every gateway
instance computes the same order of servers with no shared state, a server
leaving moves only its own conversations, and a faster server is home to more
of them. The load is bounded: a server loaded over LOAD_BOUND times the least
loaded one passes the conversation to the next server in the key's order
(see choose_auto).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway.routing.policy import Backend
from gateway.routing.reported.reports import Report, holds

WAITING_WEIGHT = 1.0
RUNNING_WEIGHT = 0.1
UNREPORTED_WEIGHT = 0.5
PREFILL_TOKENS_PER_UNIT = 1000.0
KV_HIGH = 0.9
KV_UNITS = 20.0  # at 100 % use, on top of the queue
COLD_LOAD_UNITS = 30.0
EVICT_UNITS = 30.0
LOAD_BOUND = 2.0


class Hint(NamedTuple):
    """What the scorer reads of the request: its affinity key, its prompt's size.
    (Named tuples, not dataclasses: built on every request, in a fraction of the time.)"""

    affinity: bytes | None = None
    prompt_tokens: int = 0


NO_HINT = Hint()


class View(NamedTuple):
    """One backend as `auto` sees it: this process's counts and the server's report."""

    in_flight: int = 0
    sent_since_report: int = 0
    report: Report | None = None  # only a fresh one; None: unknown
    speed: float = 1.0  # relative to the fastest of the model's backends (1: as fast)


def queue(view: View) -> float:
    """What is ahead of a new request, in units (see the module's docstring)."""
    report = view.report
    if report is None:
        return UNREPORTED_WEIGHT * view.in_flight
    # What was sent since the report runs if the server had room then, else waits.
    sent = view.sent_since_report * (WAITING_WEIGHT if report.waiting else RUNNING_WEIGHT)
    estimate = RUNNING_WEIGHT * report.running + WAITING_WEIGHT * report.waiting + sent
    return max(estimate, RUNNING_WEIGHT * view.in_flight)


def cost(view: View, *, hint: Hint, model: str) -> float:
    """Estimated time to first token, in units of a request's turn (lower is better)."""
    return _units(view, model, hint.prompt_tokens)


def _units(view: View, model: str, prompt_tokens: int) -> float:
    units = 1.0 + queue(view) + prompt_tokens / PREFILL_TOKENS_PER_UNIT
    report = view.report
    if report is not None:
        if report.kv_usage is not None and report.kv_usage > KV_HIGH:
            units += KV_UNITS * (report.kv_usage - KV_HIGH) / (1 - KV_HIGH)
        if report.loaded is not None and holds(report, model) is False:
            units += COLD_LOAD_UNITS + (EVICT_UNITS if view.in_flight else 0.0)
    return units / max(view.speed, 1e-3)


def _unit_hash(key: bytes, registration_id: str) -> float:
    digest = hashlib.blake2b(key + registration_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)


def hash_log(key: bytes, registration_id: str) -> float:
    """ln of the key's hash for one server (negative): what rendezvous weighs by speed.
    It depends on the key and the server only, so the balancer keeps it per key."""
    return math.log(_unit_hash(key, registration_id))


def rendezvous(
    key: bytes, backends: Sequence[Backend], speeds: Mapping[str, float]
) -> list[Backend]:
    """The backends in `key`'s order of preference: weighted rendezvous hashing
    (score -w / ln(h)), so each is first for a share of keys proportional to its
    speed, and removing one changes only the keys it was first for."""

    return sorted(
        backends,
        key=lambda b: _score(key, b.registration_id, speeds.get(b.registration_id, 1.0)),
        reverse=True,
    )


def _score(key: bytes, registration_id: str, weight: float) -> float:
    return -weight / hash_log(key, registration_id)


def choose_auto(
    candidates: Sequence[Backend],
    views: Mapping[str, View],
    hint: Hint,
    hash_logs: Mapping[str, float] | None = None,
) -> Backend:
    """The conversation's server while it is not overloaded, else the one that answers
    soonest.

    Without an affinity key: the lowest cost. With one: the candidates in the key's
    rendezvous order (weighted by speed squared: a server half as fast is home to a
    quarter as many conversations, as a queue there costs twice as long), and the
    first whose load (its cost without the prompt) is within LOAD_BOUND times the
    least loaded one's. The bound does not depend on the prompt, which grows with
    every turn: a conversation passed on at one turn is passed on at the next, to the
    same next server in every worker, instead of moving back and forth.

    `hash_logs`: hash_log(key, id) by registration id, as far as the caller knows them
    (the balancer keeps them per key: a conversation's every turn needs the same ones).
    This runs on every request that has a choice: one pass, no sort, no hash when only
    one candidate is within the bound."""
    key = hint.affinity
    if key is None:
        tokens = hint.prompt_tokens
        return min(
            candidates,
            key=lambda b: (
                _units(views[b.registration_id], b.model_name, tokens),
                b.registration_id,
            ),
        )
    loads = [_units(views[b.registration_id], b.model_name, 0) for b in candidates]
    least = min(loads)
    bound = LOAD_BOUND * least
    if len(loads) > 1 and sorted(loads)[1] > bound:  # only the least loaded is within
        return candidates[loads.index(least)]  # (every score is positive: it is chosen)
    known = hash_logs or {}
    chosen, best = candidates[0], -1.0
    for backend, load in zip(candidates, loads, strict=True):
        if load <= bound:
            backend_id = backend.registration_id
            logged = known.get(backend_id)
            if logged is None:
                logged = hash_log(key, backend_id)
            score = -(views[backend_id].speed ** 2) / logged
            if score > best:
                chosen, best = backend, score
    return chosen
