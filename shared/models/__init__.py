"""SQLAlchemy models of the registry; the schema itself is owned by Alembic.

Times are stored as UTC and always come back timezone-aware, so the two
processes and the API never mix naive and aware datetimes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.models.base import Base, UTCDateTime, new_id, utcnow


class HealthStatus(enum.StrEnum):
    """What healthd (or a failed request) last concluded about a backend."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class CheckOutcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class RegistrationSource(enum.StrEnum):
    """Who made a registration: the admin API, or the gateway's own configuration."""

    API = "api"
    CONFIG = "config"


class ModelServer(Base):
    """One registered backend: a server serving one named model, or (with no
    `model_name`) every model it lists."""

    __tablename__ = "model_servers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_name: Mapped[str | None] = mapped_column(String(256))
    # What the backend calls `model_name`; requests are rewritten to it.
    backend_model: Mapped[str | None] = mapped_column(String(256))
    endpoint_url: Mapped[str] = mapped_column(Text, nullable=False)
    api_key: Mapped[str | None] = mapped_column(Text)

    # Capabilities the owner declares.
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    context_length: Mapped[int | None] = mapped_column(Integer)
    streaming_supported: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    # Owner metadata.
    student_id: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)

    # Routing: tiers (lower number is preferred), weights, caps and tags.
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    weight: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)

    # Health, as written by healthd (and the gateway's passive failures).
    health_status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=HealthStatus.UNKNOWN.value
    )
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_response_time_ms: Mapped[float | None] = mapped_column(Float)
    reported_models: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    # What the backend's model list says of each model (max_model_len, owned_by).
    model_details: Mapped[dict[str, dict[str, Any]]] = mapped_column(
        JSON, nullable=False, default=dict
    )
    # model → why it is unhealthy for that model alone (its canary generation failed;
    # healthd/canary.py): it lists the model but cannot generate with it.
    model_faults: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    # Canary generations healthd sent it: health traffic, not usage.
    # model → what the proxy saw of the names its answers give (gateway/accounting/
    # mismatch.py): {"answers", "mismatched", "named" (the last other name), "suspect"}.
    # Not a routing column: the suspect mark itself is a model fault.
    model_mismatches: Mapped[dict[str, dict[str, object]]] = mapped_column(
        JSON, nullable=False, default=dict
    )
    canaries_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    source: Mapped[str] = mapped_column(
        String(16), nullable=False, default=RegistrationSource.API.value
    )
    # SHA-256 (hex) of the token its holder manages it with; the token itself is never kept.
    management_token_hash: Mapped[str | None] = mapped_column(String(64))
    # No new requests; those in flight finish (POST /admin/servers/{id}/drain).
    draining: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # healthd POSTs every health transition here (signed; healthd/notify.py).
    notify_url: Mapped[str | None] = mapped_column(Text)
    # The shape of those POSTs: json (None), slack, discord or ntfy (healthd/formats.py).
    notify_format: Mapped[str | None] = mapped_column(String(16))
    # A lease a host holds (POST /admin/leases): connected since, last renewal, expiry.
    lease_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    success_rate: Mapped[float | None] = mapped_column(Float)
    avg_response_time_ms: Mapped[float | None] = mapped_column(Float)
    uptime_percent: Mapped[float | None] = mapped_column(Float)

    # Life cycle: soft deletion keeps the row and its history.
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    deregistered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )

    def served_models(self) -> list[tuple[str, str]]:
        """(name clients use, name the backend uses) of each model it serves: the one
        it names, or every model its backend lists."""
        if self.model_name is None:
            return [(model, model) for model in self.reported_models or ()]
        return [(self.model_name, self.backend_model or self.model_name)]

    checks: Mapped[list[HealthCheck]] = relationship(
        back_populates="server", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("idx_model_servers_model_name", "model_name"),
        Index("idx_model_servers_health_status", "health_status"),
        Index("idx_model_servers_active", "is_active"),
        Index("idx_model_servers_lease_expires_at", "lease_expires_at"),
    )


# The columns the routing snapshot (gateway/routing/registry.py) reads. An UPDATE of
# any of them bumps registry_generation (the trigger migration 0010 makes from this
# list), so every worker reloads; tests/shared/test_routing_columns.py checks the
# list against the trigger and against what the snapshot reads. Changing it needs a
# migration that makes the trigger again.
ROUTING_COLUMNS = (
    "model_name",
    "backend_model",
    "endpoint_url",
    "api_key",
    "streaming_supported",
    "student_id",
    "tags",
    "priority",
    "weight",
    "max_concurrent",
    "health_status",
    "status_changed_at",
    "reported_models",
    "model_details",
    "model_faults",
    "draining",
    "is_active",
    "registered_at",
)


class HealthCheck(Base):
    """One probe of one backend (healthd keeps the last 100 per server)."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), nullable=False
    )
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    response_time_ms: Mapped[float | None] = mapped_column(Float)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)

    server: Mapped[ModelServer] = relationship(back_populates="checks")

    __table_args__ = (
        Index("idx_health_checks_server_checked", "server_id", "checked_at"),
        Index("idx_health_checks_checked_at", "checked_at"),
    )


class RegistryGeneration(Base):
    """One row whose value grows whenever routing-relevant registry data changes (triggers)."""

    __tablename__ = "registry_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class HealthdHeartbeat(Base):
    """One row healthd rewrites every second or so: the gateway reads its age (with the
    registry generation) to know that someone still checks the backends."""

    __tablename__ = "healthd_heartbeat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    # Which healthd ("host:pid"), and whether it is the active one or a standby.
    instance: Mapped[str | None] = mapped_column(String(128))
    role: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("idx_healthd_heartbeat_instance", "instance", unique=True),)


class BackendUsage(Base):
    """Totals the gateway counts in memory and adds here every few seconds."""

    __tablename__ = "backend_usage"

    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), primary_key=True
    )
    requests_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failures_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_ms_total: Mapped[float] = mapped_column(Float, nullable=False, default=0)
    prompt_tokens_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_request_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ResponseOwner(Base):
    """Which backend made a Responses API response (its conversation lives there)."""

    __tablename__ = "response_owners"

    response_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("idx_response_owners_created_at", "created_at"),)


class UsageMinute(Base):
    """What the gateway served in one minute through one backend for one model (all
    workers added up); latencies as counts per bucket of gateway.accounting.windows."""

    __tablename__ = "usage_minutes"

    minute: Mapped[int] = mapped_column(Integer, primary_key=True)  # Unix time // 60
    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_counts: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    first_token_counts: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    # Of `requests` (attempts), those whose request went on to another backend.
    retried: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (Index("idx_usage_minutes_minute", "minute"),)


class ModelClaim(Base):
    """A model name someone owns: only the owner's registration and the co-hosts it
    allows serve it (an unclaimed name is served by every server that offers it)."""

    __tablename__ = "model_claims"

    model_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    # The owning registration (None: the admin's); kept when it is deregistered, so a
    # host that leaves keeps its name until the admin opens it.
    owner_id: Mapped[str | None] = mapped_column(String(36))
    # The owner as people know it (its student_id when it claimed), for the pages.
    owner_label: Mapped[str | None] = mapped_column(String(128))
    co_hosts: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class NotifyOutbox(Base):
    """A notification the gateway asks healthd to send (the admin drained or deregistered
    a server): the two processes meet only in the database, and healthd does every send."""

    __tablename__ = "notify_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), nullable=False
    )
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CheckRequest(Base):
    """A probe the admin API asked for; healthd takes it within a tick."""

    __tablename__ = "check_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("model_servers.id", ondelete="CASCADE"), nullable=False
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


# The clients' tables (#20), in a module of their own; here for `from shared.models import`.
from shared.models.clients import (  # noqa: E402
    KEY_COLUMNS,
    ClientGroup,
    ClientKey,
    KeysGeneration,
    KeyUsageMinute,
)

__all__ = [
    "KEY_COLUMNS",
    "ROUTING_COLUMNS",
    "BackendUsage",
    "Base",
    "CheckOutcome",
    "CheckRequest",
    "ClientGroup",
    "ClientKey",
    "HealthCheck",
    "HealthStatus",
    "HealthdHeartbeat",
    "KeyUsageMinute",
    "KeysGeneration",
    "ModelClaim",
    "ModelServer",
    "NotifyOutbox",
    "RegistrationSource",
    "RegistryGeneration",
    "ResponseOwner",
    "UTCDateTime",
    "UsageMinute",
    "new_id",
    "utcnow",
]
