"""Client groups in the database: a class's shared limits and models, which its keys
inherit (gateway/people/store.py keeps the keys themselves)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.people.schemas import GroupOut
from gateway.people.store import status_of
from shared.db import Database
from shared.errors import Conflict, InvalidRequest, NotFound
from shared.models import ClientGroup, ClientKey, utcnow


def _group_out(session: Session, group: ClientGroup) -> GroupOut:
    return GroupOut(
        name=group.name,
        limits=dict(group.limits or {}),
        models=group.models,
        created_at=group.created_at,
        keys=_active_keys_of(session, group.name),
    )


def _active_keys_of(session: Session, name: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ClientKey)
            .where(ClientKey.group_name == name, ClientKey.revoked_at.is_(None))
        )
        or 0
    )


def set_group(
    db: Database, name: str, limits: dict[str, int], models: list[str] | None
) -> tuple[GroupOut, bool]:
    """Create or replace a group's limits and models; True when it was created."""
    with db.writing(durable=True) as session:
        group = session.get(ClientGroup, name)
        created = group is None
        if group is None:
            group = ClientGroup(name=name, created_at=utcnow())
            session.add(group)
        if not created and models is not None:
            _require_keys_keep_a_model(session, name, models)
        group.limits = limits
        group.models = models
        session.flush()
        return _group_out(session, group), created


def _require_keys_keep_a_model(session: Session, group_name: str, models: list[str]) -> None:
    """The group's new models must meet each of its live keys' own (as a key's must meet
    its group's when it is created or changed)."""
    keys = session.scalars(
        select(ClientKey).where(ClientKey.group_name == group_name, ClientKey.revoked_at.is_(None))
    ).all()
    now = utcnow()
    stranded = [
        key
        for key in keys
        if key.models is not None
        and status_of(key, now) == "active"
        and not set(key.models) & set(models)
    ]
    if stranded:
        named = "; ".join(
            f"key {key.id} ({key.prefix}…) may use only {', '.join(sorted(key.models or []))}"
            for key in stranded[:5]
        )
        more = f"; and {len(stranded) - 5} more keys" if len(stranded) > 5 else ""
        raise InvalidRequest(
            f"models: none of these keys of group {group_name!r} could use any of "
            f"{', '.join(sorted(models)) or 'no model'}: {named}{more}. Change those keys' "
            "models first, or include one of theirs",
            param="models",
        )


def read_groups(db: Database) -> list[GroupOut]:
    with db.reading() as session:
        groups = session.scalars(select(ClientGroup).order_by(ClientGroup.name)).all()
        counts = dict(
            session.execute(
                select(ClientKey.group_name, func.count())
                .where(ClientKey.revoked_at.is_(None), ClientKey.group_name.is_not(None))
                .group_by(ClientKey.group_name)
            ).all()
        )
        return [
            GroupOut(
                name=g.name,
                limits=dict(g.limits or {}),
                models=g.models,
                created_at=g.created_at,
                keys=int(counts.get(g.name, 0)),
            )
            for g in groups
        ]


def _get_group(session: Session, name: str) -> ClientGroup:
    group = session.get(ClientGroup, name)
    if group is None:
        raise NotFound(f"no group named {name!r}")
    return group


def read_group(db: Database, name: str) -> GroupOut:
    with db.reading() as session:
        return _group_out(session, _get_group(session, name))


def delete_group(db: Database, name: str) -> None:
    """Refused while a key that is not revoked is in the group (its limits and models
    would change under it); revoked keys keep the group's name, as a record."""
    with db.writing(durable=True) as session:
        group = _get_group(session, name)
        active = _active_keys_of(session, name)
        if active:
            raise Conflict(
                f"group {name!r} still has {active} key(s) that are not revoked; revoke them "
                "or move them to another group first"
            )
        session.delete(group)
