"""A client's limits: what each key may use, from the key, its group and the defaults.

Pure: validated from JSON (the admin API's and the database's form), and merged
key over group over the gateway's defaults. A limit of 0 means "no limit"; a
limit absent from a key is its group's, and absent from both, the default.
`priority` is not a limit but a weight: the key's share of a full pool's
freed slots against other waiting keys (gateway/admission/fair_queue.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LIMIT_NAMES = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent",
    "priority",
)
MAX_LIMIT = 10**12
MAX_PRIORITY = 100


class LimitError(ValueError):
    """A limit that makes no sense; `field` names it (e.g. `limits.tokens_per_minute`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    max_concurrent: int = 0
    priority: int = 1

    @property
    def limits_tokens(self) -> bool:
        return bool(self.tokens_per_minute or self.tokens_per_day)

    @property
    def any(self) -> bool:
        return bool(
            self.requests_per_minute
            or self.tokens_per_minute
            or self.tokens_per_day
            or self.max_concurrent
        )


def validate_limits(raw: object, *, reservation: int, field: str = "limits") -> dict[str, int]:
    """The limits of a request body (absent ones left out), or LimitError naming the field.

    A token limit below `reservation` (what one request without max_tokens reserves)
    could never admit such a request: refused, rather than a key that silently
    cannot work."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise LimitError(field, f"{field} must be an object of {', '.join(LIMIT_NAMES)}")
    limits: dict[str, int] = {}
    for name, value in raw.items():
        where = f"{field}.{name}"
        if name not in LIMIT_NAMES:
            raise LimitError(where, f"unknown limit {name!r}; limits are {', '.join(LIMIT_NAMES)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise LimitError(where, f"{where} must be a whole number")
        if name == "priority":
            if not 1 <= value <= MAX_PRIORITY:
                raise LimitError(where, f"{where} must be from 1 to {MAX_PRIORITY}")
        elif not 0 <= value <= MAX_LIMIT:
            raise LimitError(where, f"{where} must be from 0 (no limit) to {MAX_LIMIT}")
        elif name in ("tokens_per_minute", "tokens_per_day") and 0 < value < reservation:
            raise LimitError(
                where,
                f"{where} of {value} is below one request's reservation ({reservation} "
                "tokens, TOKEN_RESERVATION_DEFAULT): no request without max_tokens could pass",
            )
        limits[name] = value
    return limits


def effective_limits(
    key: Mapping[str, int] | None, group: Mapping[str, int] | None, defaults: Limits
) -> Limits:
    """Each limit from the key, else its group, else the default."""
    values = {}
    for name in LIMIT_NAMES:
        for source in (key, group):
            if source is not None and name in source:
                values[name] = int(source[name])
                break
        else:
            values[name] = getattr(defaults, name)
    return Limits(**values)


def allowed_models(key: list[str] | None, group: list[str] | None) -> frozenset[str] | None:
    """The models a key may use: those of its own list that its group allows (a group
    is a class's namespace: no key of it reaches past it), or all (None) when neither
    names any."""
    if key is None:
        return None if group is None else frozenset(group)
    return frozenset(key) if group is None else frozenset(key) & frozenset(group)
