"""Whether an answer's `model` names the model asked for: healthd's canary and the
proxy's count of answers naming another model (gateway/accounting/mismatch.py).

Servers spell a model's name their own way, and that is no mismatch: Ollama
answers "llama3.2:latest" for "llama3.2", vLLM may answer a path's last part
(its served-model-name), a registration with `backend_model` is answered in the
backend's name, a hosted API answers with its dated snapshot's name
("gpt-4o-2024-08-06" for "gpt-4o", "claude-3-5-sonnet-20241022"), and an answer
that names no model names no other one.
"""

from __future__ import annotations

import re

# A snapshot's suffix: a date or a version of digits (`2024-08-06`, `20241022`, `0613`).
_SNAPSHOT = re.compile(r"\d{4}(-\d{2}-\d{2}|\d{4})?")


def plain_name(name: str) -> str:
    """A name as servers compare it: no case, no spaces, no `:latest` tag."""
    return name.strip().lower().removesuffix(":latest")


def same_model(asked: str, answered: object) -> bool:
    """Whether `answered` (an answer's `model`, of any JSON type) names `asked` (pure)."""
    if not isinstance(answered, str) or not answered.strip():
        return True
    a, b = plain_name(asked).rsplit("/", 1)[-1], plain_name(answered).rsplit("/", 1)[-1]
    if a == b:
        return True
    snapshot = b.removeprefix(a + "-")
    return snapshot != b and _SNAPSHOT.fullmatch(snapshot) is not None


def names_another_model(routed: str, upstream: str | None, answered: object) -> bool:
    """Whether an answer routed to `routed` (the client's name; `upstream`: what the
    backend calls it, when registered so) names another model (pure)."""
    if same_model(routed, answered):
        return False
    return upstream is None or not same_model(upstream, answered)
