"""The clients' tables (#20): keys (only their hash kept), groups, and usage per key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, UTCDateTime, new_id, utcnow


class ClientKey(Base):
    """A client's key to /v1: only its SHA-256 is kept, with a short visible prefix to
    recognise it by. Revoking is soft (`revoked_at`): its usage history stays."""

    __tablename__ = "client_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    owner: Mapped[str] = mapped_column(String(200), nullable=False)  # a student_id
    group_name: Mapped[str | None] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    # requests_per_minute, tokens_per_minute, tokens_per_day, max_concurrent, priority:
    # a missing one is the group's, then the global default.
    limits: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False, default=dict)
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None: the group's, or all
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("idx_client_keys_owner", "owner"),
        Index("idx_client_keys_group", "group_name"),
    )


class ClientGroup(Base):
    """A class's namespace: the default limits of its keys and the models they may use."""

    __tablename__ = "client_groups"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    limits: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False, default=dict)
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None: every model
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class KeysGeneration(Base):
    """One row whose value grows whenever a key or group changes (triggers; not on
    `last_used_at`): each worker polls it and reloads its keys when it moved."""

    __tablename__ = "keys_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


# The columns of client_keys whose change a worker must see (everything but last use).
KEY_COLUMNS = (
    "name",
    "owner",
    "group_name",
    "key_hash",
    "limits",
    "models",
    "expires_at",
    "revoked_at",
)


class KeyUsageMinute(Base):
    """What one client key was served in one minute for one model (all workers added
    up): the per-person side of usage_minutes."""

    __tablename__ = "key_usage_minutes"

    minute: Mapped[int] = mapped_column(Integer, primary_key=True)  # Unix time // 60
    key_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("client_keys.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_counts: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)

    __table_args__ = (Index("idx_key_usage_minutes_minute", "minute"),)
