"""Checking what an admin sends about keys and groups, beyond the schemas: limits (they
depend on TOKEN_RESERVATION_DEFAULT) and expiry (it depends on now). Pure: `now` and the
reservation are passed in; every refusal is an InvalidRequest naming its field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.admission.limits import LimitError, validate_limits
from gateway.people.schemas import KeyCreate, KeyUpdate
from gateway.people.store import KeyChanges, NewKey
from shared.errors import InvalidRequest


def checked_limits(raw: object, *, reservation: int, field: str = "limits") -> dict[str, int]:
    try:
        return validate_limits(raw, reservation=reservation, field=field)
    except LimitError as error:
        raise InvalidRequest(str(error), param=error.field) from None


def checked_expiry(
    value: datetime | None, now: datetime, field: str = "expires_at"
) -> datetime | None:
    """An expiry in UTC (naive times are read as UTC); one not in the future is refused."""
    if value is None:
        return None
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if moment <= now:
        raise InvalidRequest(
            f"{field} must be in the future (it is {moment.isoformat()}, now is "
            f"{now.replace(microsecond=0).isoformat()})",
            param=field,
        )
    return moment


def new_key(
    request: KeyCreate, key: str, *, reservation: int, now: datetime, where: str = ""
) -> NewKey:
    """A KeyCreate checked; `where` prefixes its fields' names (`keys[3].`) in errors."""
    return NewKey(
        key=key,
        name=request.name,
        owner=request.owner,
        group=request.group,
        limits=checked_limits(request.limits, reservation=reservation, field=f"{where}limits"),
        models=request.models,
        expires_at=checked_expiry(request.expires_at, now, f"{where}expires_at"),
        where=where,
    )


def key_changes(request: KeyUpdate, *, reservation: int, now: datetime) -> KeyChanges:
    """A PATCH checked: limits given as null are the ones to clear."""
    sent = frozenset(request.model_fields_set)
    if not sent:
        raise InvalidRequest("the update is empty; send at least one field to change")
    if "name" in sent and request.name is None:
        raise InvalidRequest("name cannot be null", param="name")
    raw = request.limits
    cleared = (
        frozenset(name for name, value in raw.items() if value is None)
        if isinstance(raw, Mapping)
        else frozenset()
    )
    return KeyChanges(
        sent=sent,
        name=request.name,
        group=request.group,
        limits=None if raw is None else checked_limits(raw, reservation=reservation),
        cleared_limits=cleared,
        models=request.models,
        expires_at=checked_expiry(request.expires_at, now),
    )
