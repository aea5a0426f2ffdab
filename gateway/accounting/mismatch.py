"""Answers naming another model than the one routed: counted per (registration,
model), and past a threshold the server is suspect for that model.

A server that lists `llama3` but answers from something else (a classmate's
proxy in front of a smaller model, a server answering every name with the one
model it has) passes every health check; its answers give it away. The proxy
reads each answer's `model` (gateway/accounting/usage.py), `Names.seen` counts
it in memory, and the feedback flush (every 2 s, off the path) adds the counts
to `model_servers.model_mismatches`. Once MODEL_MISMATCH_MIN_ANSWERS were
counted and MODEL_MISMATCH_THRESHOLD of them named another model, the flush
puts the model in `model_faults` (a routing column: every worker's snapshot
drops the pair) with `"suspect": true` on its counts; healthd's next passing
canary for the model clears both (healthd/store.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.model_names import names_another_model
from shared.models import ModelServer
from shared.settings import Settings

MAX_NAME = 256  # a longer `model` is kept cut to this


@dataclass(frozen=True)
class MismatchPolicy:
    threshold: float = 0.5  # MODEL_MISMATCH_THRESHOLD
    min_answers: int = 20  # MODEL_MISMATCH_MIN_ANSWERS

    @classmethod
    def of(cls, settings: Settings) -> MismatchPolicy:
        return cls(settings.model_mismatch_threshold, settings.model_mismatch_min_answers)


WINDOW_ANSWERS = 200  # at least; see window_of


@dataclass
class Tally:
    answers: int = 0  # answers that named a model
    mismatched: int = 0  # of which named another one
    named: str | None = None  # the last other name

    def add(self, other: Tally) -> None:
        self.answers += other.answers
        self.mismatched += other.mismatched
        self.named = other.named or self.named


# (registration id, model routed) → what its answers named, since the last flush
Tallies = dict[tuple[str, str], Tally]


def seen(
    tallies: Tallies,
    registration_id: str,
    model: str,
    upstream: str | None,
    answered: str | None,
) -> None:
    """Count one answer's `model` (none: nothing to count). Runs on the request path."""
    if answered is None:
        return
    key = (registration_id, model)
    tally = tallies.get(key)
    if tally is None:
        tally = tallies[key] = Tally()
    tally.answers += 1
    if answered != model and names_another_model(model, upstream, answered):
        tally.mismatched += 1
        tally.named = answered[:MAX_NAME]


def is_suspect(answers: int, mismatched: int, policy: MismatchPolicy) -> bool:
    """Whether a server's counts for a model make it suspect (pure)."""
    return answers >= policy.min_answers and mismatched >= policy.threshold * answers


def suspect_reason(answers: int, mismatched: int, named: object) -> str:
    return (
        f"suspect: {mismatched} of {answers} answers named another model"
        f" (last: {named!r}); out of routing until its canary passes"
    )


def window_of(policy: MismatchPolicy) -> int:
    """How many answers the counts weigh: past it both are halved, so that a long good
    past does not hide a server that starts lying (it would have needed as many wrong
    answers as it had right ones)."""
    return max(WINDOW_ANSWERS, 4 * policy.min_answers)


def merged(recorded: dict[str, object] | None, tally: Tally, window: int = 0) -> dict[str, object]:
    """A model's stored counts with this process's added (pure), halved while they are
    over `window` answers (0: never)."""
    recorded = recorded or {}
    answers = _count(recorded.get("answers")) + tally.answers
    mismatched = _count(recorded.get("mismatched")) + tally.mismatched
    while window and answers > window:
        answers, mismatched = answers // 2, mismatched // 2
    return {
        "answers": answers,
        "mismatched": mismatched,
        "named": tally.named or recorded.get("named"),
        "suspect": bool(recorded.get("suspect")),
    }


def _count(value: object) -> int:
    return value if type(value) is int else 0


def write_tallies(session: Session, tallies: Tallies, policy: MismatchPolicy) -> None:
    """Add the counts to the servers' rows and mark the suspect ones; a model already
    faulted (its canary failed) keeps its reason. The rows are locked in id order, as
    healthd locks them, FOR NO KEY UPDATE: the batch's own inserts that refer to
    them (usage, check requests) hold KEY SHARE, which that lock does not wait for."""
    ids = sorted({registration_id for registration_id, _ in tallies})
    if not ids:
        return
    servers = session.scalars(
        select(ModelServer)
        .where(ModelServer.id.in_(ids))
        .order_by(ModelServer.id)
        .with_for_update(key_share=True)
    )
    for server in servers:
        counts = dict(server.model_mismatches or {})
        faults = dict(server.model_faults or {})
        for (registration_id, model), tally in tallies.items():
            if registration_id != server.id:
                continue
            entry = merged(_entry(counts.get(model)), tally, window_of(policy))
            answers, mismatched = _count(entry["answers"]), _count(entry["mismatched"])
            if model not in faults and is_suspect(answers, mismatched, policy):
                faults[model] = suspect_reason(answers, mismatched, entry["named"])
                entry["suspect"] = True
            counts[model] = entry
        server.model_mismatches = counts
        if faults != (server.model_faults or {}):
            server.model_faults = faults


def _entry(value: object) -> dict[str, object] | None:
    return value if isinstance(value, dict) else None
