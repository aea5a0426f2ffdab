"""healthd's database side (blocking; the daemon runs it in a thread).

Results are written in batches, one transaction per batch, so a thousand
backends cost a few transactions per second, not a thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from healthd.canary import CanaryResult
from healthd.notify import Notification
from healthd.policy import judge
from shared.db import Database, upsert
from shared.models import (
    CheckOutcome,
    CheckRequest,
    HealthCheck,
    HealthdHeartbeat,
    ModelServer,
    NotifyOutbox,
    RegistryGeneration,
    UsageMinute,
    UTCDateTime,
)
from shared.probe import ProbeResult

HISTORY_KEPT = 100
# A result that changes nothing still refreshes the server row (metrics, last
# check) at most this often.
ROW_REFRESH = timedelta(seconds=60)


@dataclass(frozen=True)
class Target:
    """What healthd needs of one active backend."""

    id: str
    endpoint_url: str
    api_key: str | None
    health_status: str
    consecutive_failures: int
    # The model the backend must list (a registration that names one), or None.
    expected_model: str | None = None
    # (name clients use, name the backend uses) of each model it serves: the canaries'.
    served: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CheckResult:
    server_id: str
    checked_at: datetime
    probe: ProbeResult
    canaries: tuple[CanaryResult, ...] = ()


@dataclass(frozen=True)
class Transition:
    server_id: str
    endpoint_url: str
    old_status: str
    new_status: str
    reason: str | None
    deregistered: bool
    notify: Notification | None = None  # told to the registration's notify_url, if any


def read_generation(database: Database) -> int:
    with database.reading() as session:
        value = session.scalar(select(RegistryGeneration.value).where(RegistryGeneration.id == 1))
        return int(value or 0)


def beat(database: Database, now: datetime, pid: int, instance: str, role: str) -> None:
    """healthd's heartbeat, one row per instance with its role: the gateway reads the
    active one's age, and stops calling itself ready when no one has checked the
    backends for a few intervals; /health and /metrics show every instance."""
    with database.writing() as session:
        statement = upsert(session, HealthdHeartbeat).values(
            beat_at=now, pid=pid, instance=instance, role=role
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[HealthdHeartbeat.instance],
                set_={"beat_at": now, "pid": pid, "role": role},
            )
        )


def forget_instances(database: Database, older_than: datetime) -> None:
    """Remove the heartbeat rows of healthd instances gone (silent since `older_than`)."""
    with database.writing() as session:
        session.execute(delete(HealthdHeartbeat).where(HealthdHeartbeat.beat_at < older_than))


def last_checks(database: Database) -> dict[str, datetime]:
    """When each backend was last checked (by whichever healthd), from the history."""
    with database.reading() as session:
        rows = session.execute(
            select(
                HealthCheck.server_id, func.max(HealthCheck.checked_at, type_=UTCDateTime())
            ).group_by(HealthCheck.server_id)
        ).all()
    return {server_id: checked_at for server_id, checked_at in rows if checked_at is not None}


def load_targets(database: Database) -> dict[str, Target]:
    with database.reading() as session:
        rows = session.scalars(select(ModelServer).where(ModelServer.is_active.is_(True))).all()
        return {
            row.id: Target(
                row.id,
                row.endpoint_url,
                row.api_key,
                row.health_status,
                row.consecutive_failures,
                row.backend_model or row.model_name,
                tuple(row.served_models()),
            )
            for row in rows
        }


def recent_models(database: Database, since: datetime) -> dict[str, set[str]]:
    """server id → the models the gateway served through it since `since` (a canary may
    check those on a server that loads models on demand: they are warm)."""
    minute = int(since.timestamp()) // 60
    with database.reading() as session:
        rows = session.execute(
            select(UsageMinute.server_id, UsageMinute.model)
            .where(UsageMinute.minute >= minute)
            .distinct()
        ).all()
    found: dict[str, set[str]] = {}
    for server_id, model in rows:
        found.setdefault(server_id, set()).add(model)
    return found


def _update_metrics(session: Session, server: ModelServer, now: datetime) -> None:
    """FR-HEALTH-008: success rate and mean response time over the last 100 checks,
    uptime over the checks of the last 24 hours."""
    recent = (
        select(HealthCheck.status, HealthCheck.response_time_ms, HealthCheck.checked_at)
        .where(HealthCheck.server_id == server.id)
        .order_by(HealthCheck.checked_at.desc())
        .limit(HISTORY_KEPT)
        .subquery()
    )
    success = recent.c.status == CheckOutcome.SUCCESS.value
    day_ago = now - timedelta(days=1)
    total, successes, average, day_total, day_successes = session.execute(
        select(
            func.count(),
            func.sum(case((success, 1), else_=0)),
            func.avg(case((success, recent.c.response_time_ms), else_=None)),
            func.sum(case((recent.c.checked_at >= day_ago, 1), else_=0)),
            func.sum(case((success & (recent.c.checked_at >= day_ago), 1), else_=0)),
        )
    ).one()
    if total:
        server.success_rate = round(100 * (successes or 0) / total, 2)
        server.avg_response_time_ms = round(average, 2) if average is not None else None
    if day_total:
        server.uptime_percent = round(100 * (day_successes or 0) / day_total, 2)


def notification_for(
    server: ModelServer, event: str, old: str, new: str, reason: str | None, at: datetime
) -> Notification | None:
    """What the server's host is told of an event (None: it gave no notify_url)."""
    if server.notify_url is None:
        return None
    return Notification(
        server.notify_url,
        server.id,
        tuple(model for model, _ in server.served_models()),
        old,
        new,
        reason,
        at,
        server.management_token_hash,
        event=event,
        format=server.notify_format or "json",
        label=server.description,
    )


@dataclass(frozen=True)
class Expired:
    registration_id: str
    notify: Notification | None


def take_outbox(database: Database) -> list[Notification]:
    """The notifications the gateway asked for (the admin drained or deregistered a
    server); taken once."""
    with database.reading() as session:
        if session.scalar(select(func.count()).select_from(NotifyOutbox)) == 0:
            return []
    with database.writing() as session:
        rows = session.scalars(select(NotifyOutbox).order_by(NotifyOutbox.id)).all()
        notifications = []
        for row in rows:
            server = session.get(ModelServer, row.server_id)
            if server is not None:
                status = server.health_status
                new = "draining" if row.event == "drained" else "deregistered"
                told = notification_for(server, row.event, status, new, row.reason, row.at)
                if told is not None:
                    notifications.append(told)
            session.delete(row)
        return notifications


def expire_leases(database: Database, now: datetime) -> list[Expired]:
    """Deactivate (soft) the registrations whose lease ran out: their host left and did
    not come back within the grace, or the gateway process holding the lease died."""
    expired = (
        ModelServer.is_active.is_(True),
        ModelServer.lease_expires_at.is_not(None),
        ModelServer.lease_expires_at < now,
    )
    with database.reading() as session:
        if not session.scalars(select(ModelServer.id).where(*expired).limit(1)).first():
            return []
    with database.writing() as session:
        servers = session.scalars(select(ModelServer).where(*expired)).all()
        gone = []
        for server in servers:
            server.is_active, server.deregistered_at = False, now
            server.lease_connected_at = None
            reason = "the host's agent stopped renewing its lease; deactivated"
            told = notification_for(
                server, "lease_expired", server.health_status, "deregistered", reason, now
            )
            gone.append(Expired(server.id, told))
        return gone


def take_check_requests(database: Database) -> set[str]:
    """The backends someone asked to have probed now; the requests are used up."""
    with database.reading() as session:
        if session.scalar(select(func.count()).select_from(CheckRequest)) == 0:
            return set()
    with database.writing() as session:
        requested = set(session.scalars(select(CheckRequest.server_id)))
        session.execute(delete(CheckRequest))
        return requested


def record_results(
    database: Database,
    results: list[CheckResult],
    *,
    max_failures: int,
    auto_deregister: bool,
) -> list[Transition]:
    """Write a batch of probe results; return the status transitions it caused."""
    transitions = []
    with database.writing() as session:
        # In id order, as the gateway locks the rows (gateway/accounting/mismatch.py).
        for result in sorted(results, key=lambda r: r.server_id):
            # Locked when its canaries' faults are written: the gateway writes them too.
            lock = {"key_share": True} if result.canaries else None
            server = session.get(ModelServer, result.server_id, with_for_update=lock)
            if server is None or not server.is_active:
                continue  # deregistered while its probe was in flight
            probe = result.probe
            session.add(
                HealthCheck(
                    server_id=server.id,
                    checked_at=result.checked_at,
                    status=(CheckOutcome.SUCCESS if probe.healthy else CheckOutcome.FAILURE).value,
                    response_time_ms=probe.response_time_ms,
                    http_status=probe.http_status,
                    error_message=probe.error,
                )
            )
            canaried = _apply_canaries(server, result.canaries)
            verdict = judge(
                status=server.health_status,
                consecutive_failures=server.consecutive_failures,
                check_ok=probe.healthy,
                max_failures=max_failures,
                auto_deregister=auto_deregister,
            )
            old_status = server.health_status
            changed = (
                canaried
                or verdict.status_changed
                or verdict.deregister
                or verdict.consecutive_failures != server.consecutive_failures
                or (server.last_error or None) != probe.error
                or (probe.listed and list(server.reported_models or []) != list(probe.models))
                or (probe.listed and (server.model_details or {}) != probe.details)
            )
            stale = (
                server.last_checked_at is None
                or result.checked_at - server.last_checked_at >= ROW_REFRESH
            )
            if not (changed or stale):
                # Nothing new: the history row is the whole write. The API reads the
                # latest check time from the history, so nothing looks stale.
                continue
            server.last_checked_at = result.checked_at
            server.last_response_time_ms = probe.response_time_ms
            server.consecutive_failures = verdict.consecutive_failures
            server.last_error = probe.error
            if probe.listed:
                server.reported_models = list(probe.models)
                server.model_details = probe.details
            if verdict.status_changed:
                server.health_status = verdict.status
                server.status_changed_at = result.checked_at
            if verdict.deregister:
                server.is_active = False
                server.deregistered_at = result.checked_at
            session.flush()
            _update_metrics(session, server, result.checked_at)
            if verdict.status_changed or verdict.deregister:
                transitions.append(
                    Transition(
                        server.id,
                        server.endpoint_url,
                        old_status,
                        verdict.status,
                        probe.error,
                        verdict.deregister,
                        notification_for(
                            server,
                            "health",
                            old_status,
                            verdict.status,
                            probe.error,
                            result.checked_at,
                        ),
                    )
                )
    return transitions


def _apply_canaries(server: ModelServer, canaries: tuple[CanaryResult, ...]) -> bool:
    """A round of canaries onto the row: counted, and each judged model's fault set or
    cleared. Whether the row changed."""
    if not canaries:
        return False
    server.canaries_sent = (server.canaries_sent or 0) + len(canaries)
    faults = dict(server.model_faults or {})
    mismatches = dict(server.model_mismatches or {})
    for canary in canaries:
        if canary.ok is True:
            faults.pop(canary.model, None)
            # A suspect mark (gateway/accounting/mismatch.py) is cleared: counting restarts.
            if (mismatches.get(canary.model) or {}).get("suspect"):
                del mismatches[canary.model]
        elif canary.ok is False:
            faults[canary.model] = canary.reason or "the canary generation failed"
    if faults != (server.model_faults or {}):
        server.model_faults = faults
    if mismatches != (server.model_mismatches or {}):
        server.model_mismatches = mismatches
    return True


def prune_history(database: Database, keep: int = HISTORY_KEPT) -> int:
    """Keep the newest `keep` checks per server; return how many rows went."""
    with database.writing() as session:
        ranked = (
            select(
                HealthCheck.id,
                func.row_number()
                .over(partition_by=HealthCheck.server_id, order_by=HealthCheck.checked_at.desc())
                .label("rank"),
            )
        ).subquery()
        old = select(ranked.c.id).where(ranked.c.rank > keep)
        result = session.execute(delete(HealthCheck).where(HealthCheck.id.in_(old)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
