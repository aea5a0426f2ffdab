"""Reads and writes of client keys and groups for the admin API (blocking; run in a thread).

A key is never stored, only its SHA-256 and visible prefix (gateway/admission/
key_format.py); the one place it exists is the answer that created it. Revoking is
soft and final: `revoked_at` is set, the row and its usage history stay. Every change
here bumps `keys_generation` (triggers), so each worker reloads its keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.admission.key_format import key_hash, visible_prefix
from gateway.admission.limits import LIMIT_NAMES, Limits, allowed_models, effective_limits
from gateway.people.schemas import KeyCreated, KeyOut, KeyStatus, KeyUsage
from shared.db import Database
from shared.errors import Conflict, InvalidRequest, NotFound
from shared.models import ClientGroup, ClientKey, KeyUsageMinute, utcnow


@dataclass(frozen=True)
class NewKey:
    """A key to create, its fields validated; `where` names it in errors (`keys[3]`)."""

    key: str
    name: str
    owner: str
    group: str | None
    limits: dict[str, int]
    models: list[str] | None
    expires_at: datetime | None
    where: str = ""


@dataclass(frozen=True)
class KeyChanges:
    """What a PATCH changes: only the fields in `sent`; `limits` merged, `cleared_limits`
    removed (back to the group's or the default)."""

    sent: frozenset[str]
    name: str | None = None
    group: str | None = None
    limits: dict[str, int] | None = None
    cleared_limits: frozenset[str] = frozenset()
    models: list[str] | None = None
    expires_at: datetime | None = None


def status_of(key: ClientKey, now: datetime) -> KeyStatus:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _limits_dict(limits: Limits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in LIMIT_NAMES}


def key_out(
    key: ClientKey,
    group: ClientGroup | None,
    defaults: Limits,
    usage: KeyUsage | None = None,
    now: datetime | None = None,
) -> KeyOut:
    """The public view of a key: its prefix, never the key or its hash."""
    allowed = allowed_models(key.models, group.models if group else None)
    return KeyOut(
        id=key.id,
        name=key.name,
        owner=key.owner,
        group=key.group_name,
        prefix=key.prefix,
        status=status_of(key, now or utcnow()),
        limits=dict(key.limits or {}),
        effective_limits=_limits_dict(
            effective_limits(key.limits, group.limits if group else None, defaults)
        ),
        models=key.models,
        allowed_models=None if allowed is None else sorted(allowed),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        usage_today=usage or KeyUsage(),
    )


def today_first_minute(now: datetime) -> int:
    """The first minute (Unix time // 60) of `now`'s UTC day: what "today" counts from."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()) // 60


def _usage_today(session: Session, key_ids: Sequence[str], now: datetime) -> dict[str, KeyUsage]:
    if not key_ids:
        return {}
    query = (
        select(
            KeyUsageMinute.key_id,
            func.sum(KeyUsageMinute.requests),
            func.sum(KeyUsageMinute.failures),
            func.sum(KeyUsageMinute.prompt_tokens),
            func.sum(KeyUsageMinute.completion_tokens),
        )
        .where(KeyUsageMinute.minute >= today_first_minute(now))
        .group_by(KeyUsageMinute.key_id)
    )
    if len(key_ids) <= 500:
        query = query.where(KeyUsageMinute.key_id.in_(key_ids))
    return {
        key_id: KeyUsage(
            requests=requests or 0,
            failures=failures or 0,
            prompt_tokens=prompt or 0,
            completion_tokens=completion or 0,
        )
        for key_id, requests, failures, prompt, completion in session.execute(query)
    }


def _groups(session: Session, names: Iterable[str | None]) -> dict[str, ClientGroup]:
    wanted = {name for name in names if name}
    if not wanted:
        return {}
    rows = session.scalars(select(ClientGroup).where(ClientGroup.name.in_(wanted)))
    return {group.name: group for group in rows}


def _views(session: Session, keys: Sequence[ClientKey], defaults: Limits) -> list[KeyOut]:
    now = utcnow()
    groups = _groups(session, (key.group_name for key in keys))
    usage = _usage_today(session, [key.id for key in keys], now)
    return [
        key_out(key, groups.get(key.group_name or ""), defaults, usage.get(key.id), now)
        for key in keys
    ]


def _require_group(session: Session, name: str | None, where: str) -> None:
    if name is not None and session.get(ClientGroup, name) is None:
        raise InvalidRequest(
            f"{where}: there is no group {name!r}; create it first (PUT /admin/groups/{name}, "
            f"or gateway-admin groups set {name})",
            param=where,
        )


def _require_some_model(
    session: Session, models: list[str] | None, group_name: str | None, where: str
) -> None:
    """A key's own models must meet its group's: a key that may use no model at all is a
    mistake, not a choice (a key revoked for good is what that would be)."""
    group = session.get(ClientGroup, group_name) if group_name else None
    if models is None or group is None or group.models is None:
        return
    if not set(models) & set(group.models):
        raise InvalidRequest(
            f"{where}models: none of {', '.join(sorted(models)) or 'these'} is among group "
            f"{group.name!r}'s models ({', '.join(sorted(group.models)) or 'none'}): the key "
            "could use no model",
            param=f"{where}models",
        )


def _same_name_key(session: Session, owner: str, name: str) -> ClientKey | None:
    return session.scalars(
        select(ClientKey)
        .where(ClientKey.owner == owner, ClientKey.name == name, ClientKey.revoked_at.is_(None))
        .limit(1)
    ).first()


def create_keys(db: Database, new: Sequence[NewKey], defaults: Limits) -> list[KeyCreated]:
    """Store `new` in one transaction (all or none): each key's group must exist, and an
    owner's keys that are not revoked have different names (a roster imported twice
    would otherwise give everyone a second key)."""
    with db.writing(durable=True) as session:
        seen: set[tuple[str, str]] = set()
        for item in new:
            _require_group(session, item.group, f"{item.where}group")
            _require_some_model(session, item.models, item.group, item.where)
            pair = (item.owner, item.name)
            existing = _same_name_key(session, *pair)
            if existing is not None or pair in seen:
                held = f"key {existing.id} ({existing.prefix}…)" if existing else "another"
                which = item.where.rstrip(".") or "the key"  # (`keys[3]` in a batch)
                raise Conflict(
                    f"{which}: owner {item.owner!r} already has {held} named "
                    f"{item.name!r}; revoke it or choose another name",
                    param=f"{item.where}name",
                )
            seen.add(pair)
        now = utcnow()
        rows = [
            ClientKey(
                name=item.name,
                owner=item.owner,
                group_name=item.group,
                key_hash=key_hash(item.key),
                prefix=visible_prefix(item.key),
                limits=item.limits,
                models=item.models,
                created_at=now,
                expires_at=item.expires_at,
            )
            for item in new
        ]
        session.add_all(rows)
        session.flush()
        groups = _groups(session, (item.group for item in new))
        return [
            KeyCreated(
                **key_out(row, groups.get(item.group or ""), defaults, None, now).model_dump(),
                key=item.key,
            )
            for row, item in zip(rows, new, strict=True)
        ]


def read_keys(
    db: Database,
    defaults: Limits,
    *,
    owner: str | None = None,
    group: str | None = None,
    include_revoked: bool = False,
    limit: int = 1000,
    offset: int = 0,
) -> list[KeyOut]:
    """Keys, oldest first (a class's roster order), filtered as asked."""
    query = select(ClientKey).order_by(ClientKey.created_at, ClientKey.id)
    if owner:
        query = query.where(ClientKey.owner == owner)
    if group:
        query = query.where(ClientKey.group_name == group)
    if not include_revoked:
        query = query.where(ClientKey.revoked_at.is_(None))
    with db.reading() as session:
        keys = session.scalars(query.limit(limit).offset(offset)).all()
        return _views(session, keys, defaults)


def _get_key(session: Session, key_id: str) -> ClientKey:
    key = session.get(ClientKey, key_id)
    if key is None:
        raise NotFound(f"no client key with id {key_id!r}")
    return key


def read_key(db: Database, key_id: str, defaults: Limits) -> KeyOut:
    with db.reading() as session:
        return _views(session, [_get_key(session, key_id)], defaults)[0]


def update_key(db: Database, key_id: str, changes: KeyChanges, defaults: Limits) -> KeyOut:
    """Apply a PATCH. A revoked key stays as it was revoked (issue a new one instead)."""
    with db.writing(durable=True) as session:
        key = _get_key(session, key_id)
        if key.revoked_at is not None:
            raise Conflict("this key is revoked; revoking is final: issue a new key instead")
        sent = changes.sent
        if "name" in sent and changes.name is not None:
            if changes.name != key.name and _same_name_key(session, key.owner, changes.name):
                raise Conflict(
                    f"owner {key.owner!r} already has a key named {changes.name!r}", param="name"
                )
            key.name = changes.name
        if "group" in sent:
            _require_group(session, changes.group, "group")
            key.group_name = changes.group
        if "limits" in sent:
            if changes.limits is None:
                key.limits = {}
            else:
                merged = {**(key.limits or {}), **changes.limits}
                key.limits = {k: v for k, v in merged.items() if k not in changes.cleared_limits}
        if "models" in sent:
            key.models = changes.models
        if "expires_at" in sent:
            key.expires_at = changes.expires_at
        if "models" in sent or "group" in sent:
            _require_some_model(session, key.models, key.group_name, "")
        session.flush()
        return _views(session, [key], defaults)[0]


def revoke_key(db: Database, key_id: str, defaults: Limits) -> KeyOut:
    """Soft and final; revoking a revoked key answers it as it is (its first revocation)."""
    with db.writing(durable=True) as session:
        key = _get_key(session, key_id)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            session.flush()
        return _views(session, [key], defaults)[0]
