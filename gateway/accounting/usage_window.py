"""Reading a window of `usage_minutes` with the registrations it names.

What /admin/stats and the load-balancing gauges of /metrics both start from:
every worker's counts (written by gateway/accounting/feedback.py), so the
figures do not depend on which worker answers. The arithmetic is windows.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import select

from gateway.accounting.key_windows import KeyInfo, KeyRow
from gateway.accounting.windows import Counts, Row, Server
from shared.db import Database
from shared.models import ClientKey, KeyUsageMinute, ModelServer, UsageMinute


def endpoint_host(endpoint_url: str) -> str:
    """`host:port` of a backend's URL: enough to tell it from the others, without the
    userinfo or a path or query that could carry a credential."""
    netloc = urlsplit(endpoint_url).netloc
    return netloc.rpartition("@")[2]


def read_window(database: Database, first_minute: int) -> tuple[list[Row], dict[str, Server]]:
    """The minutes from `first_minute` on, and every registration they or the pool name."""
    with database.reading() as session:
        minutes: Sequence[UsageMinute] = session.scalars(
            select(UsageMinute).where(UsageMinute.minute >= first_minute)
        ).all()
        rows = [
            Row(
                m.minute,
                m.server_id,
                m.model,
                Counts(
                    m.requests,
                    m.failures,
                    m.prompt_tokens,
                    m.completion_tokens,
                    list(m.latency_counts),
                    list(m.first_token_counts),
                    m.retried,
                ),
            )
            for m in minutes
        ]
        named = {row.backend for row in rows}
        servers = session.scalars(
            select(ModelServer).where(ModelServer.is_active.is_(True) | ModelServer.id.in_(named))
        ).all()
        return rows, {
            server.id: Server(
                id=server.id,
                owner=server.student_id,
                health=server.health_status if server.is_active else "deregistered",
                last_error=server.last_error,
                weight=server.weight,
                priority=server.priority,
                models=tuple(model for model, _ in server.served_models()),
                endpoint_host=endpoint_host(server.endpoint_url),
                description=server.description,
                draining=server.draining,
            )
            for server in servers
        }


def read_key_window(
    database: Database, first_minute: int
) -> tuple[list[KeyRow], dict[str, KeyInfo]]:
    """The per-key minutes from `first_minute` on, and every key (a prefix, never the
    key): the per-person side of read_window."""
    with database.reading() as session:
        minutes: Sequence[KeyUsageMinute] = session.scalars(
            select(KeyUsageMinute).where(KeyUsageMinute.minute >= first_minute)
        ).all()
        rows = [
            KeyRow(
                m.minute,
                m.key_id,
                m.model,
                Counts(
                    m.requests,
                    m.failures,
                    m.prompt_tokens,
                    m.completion_tokens,
                    list(m.latency_counts),
                ),
            )
            for m in minutes
        ]
        keys = session.execute(
            select(
                ClientKey.id,
                ClientKey.name,
                ClientKey.owner,
                ClientKey.group_name,
                ClientKey.prefix,
                ClientKey.revoked_at.is_not(None),
            )
        ).all()
        return rows, {
            key_id: KeyInfo(key_id, name, owner, group, prefix, bool(revoked))
            for key_id, name, owner, group, prefix, revoked in keys
        }
