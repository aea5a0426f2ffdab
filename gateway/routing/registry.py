"""The registry in memory: what the request path routes from, with no database I/O.

A background task polls one row (`registry_generation`, bumped by triggers
whenever routing data changes) every POLL_SECONDS, off the event loop; when
the number moved it reloads every active registration in one read and swaps
the snapshot in with a single assignment. Requests always see a complete,
consistent snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.routing.claims import Claim, may_serve, read_claims
from gateway.routing.policy import Backend
from shared.db import Database
from shared.errors import NotFound, ServiceUnavailable
from shared.logging import get_logger
from shared.models import HealthdHeartbeat, HealthStatus, ModelServer, RegistryGeneration, utcnow
from shared.single_flight import SingleFlight

POLL_SECONDS = 0.2
# On PostgreSQL a NOTIFY wakes the watcher at each change; the poll is the fallback.
LISTENING_POLL_SECONDS = 0.5
CATCH_UP_AFTER_SECONDS = 0.05  # an unknown model re-reads the registry at most this often
OFFLINE_RETRY_AFTER_SECONDS = 60  # a model whose servers left: a host may come back
OFFLINE_MEMORY_SECONDS = 24 * 3600.0  # a model served this recently is offline, not unknown

log = get_logger("registry")


@dataclass(frozen=True)
class RegistrySnapshot:
    generation: int
    by_model: Mapping[str, tuple[Backend, ...]] = field(default_factory=dict)
    created: Mapping[str, int] = field(default_factory=dict)  # model → first registration
    # model → what its backends say of it (max_model_len: the smallest; owned_by: the first)
    details: Mapping[str, Mapping[str, str | int]] = field(default_factory=dict)
    # model → when (epoch seconds) its last server left, for models no active server
    # serves that one did within OFFLINE_MEMORY_SECONDS: "offline", not "not found".
    departed: Mapping[str, float] = field(default_factory=dict)
    # model → its owner and co-hosts, for the names someone claimed (routing: claims.py).
    claims: Mapping[str, Claim] = field(default_factory=dict)

    def backends(self, model: str) -> tuple[Backend, ...]:
        return self.by_model.get(model, ())

    def server(self, backend_id: str) -> Backend | None:
        """A registration by id (as a Backend of one of the models it serves)."""
        for backends in self.by_model.values():
            for backend in backends:
                if backend.registration_id == backend_id:
                    return backend
        return None

    def left_at(self, model: str, now: float) -> float | None:
        """When the last server of `model` left, if it did within OFFLINE_MEMORY_SECONDS."""
        left = self.departed.get(model)
        return left if left is not None and now - left < OFFLINE_MEMORY_SECONDS else None

    def healthy_count(self, model: str) -> int:
        """Backends that take new requests: healthy and not draining."""
        return sum(1 for b in self.backends(model) if b.healthy and not b.draining)


EMPTY = RegistrySnapshot(generation=-1)


def merge_details(
    into: dict[str, str | int], details: Mapping[str, str | int]
) -> dict[str, str | int]:
    """One model's details over its backends: the smallest max_model_len (a prompt that
    fits it fits every backend), the first owned_by."""
    length = details.get("max_model_len")
    if isinstance(length, int):
        known = into.get("max_model_len")
        into["max_model_len"] = min(known, length) if isinstance(known, int) else length
    owner = details.get("owned_by")
    if isinstance(owner, str):
        into.setdefault("owned_by", owner)
    return into


def _backend(server: ModelServer, model: str, backend_model: str) -> Backend:
    # A model whose canary failed is unhealthy on this server alone (healthd/canary.py).
    healthy = server.health_status == HealthStatus.HEALTHY.value and model not in (
        server.model_faults or {}
    )
    return Backend(
        registration_id=server.id,
        model_name=model,
        upstream_model=backend_model if backend_model != model else None,
        base_url=server.endpoint_url,
        api_key=server.api_key,
        healthy=healthy,
        draining=server.draining,
        owner=server.student_id,
        tags=frozenset(server.tags or ()),
        priority=server.priority,
        weight=max(1, server.weight),
        max_concurrent=server.max_concurrent,
        streaming=server.streaming_supported,
        healthy_since=(
            server.status_changed_at.timestamp() if healthy and server.status_changed_at else None
        ),
    )


def read_generation(database: Database) -> int:
    database.check_file()  # (a poll's new connection would make an empty file)
    with database.reading() as session:
        value = session.scalar(select(RegistryGeneration.value).where(RegistryGeneration.id == 1))
        return int(value or 0)


@dataclass(frozen=True)
class HealthdInstance:
    """One healthd's heartbeat row: who, its role (active or standby), when it beat."""

    instance: str
    role: str
    beat_at: datetime


def read_generation_and_beats(database: Database) -> tuple[int, tuple[HealthdInstance, ...]]:
    """The generation, and every healthd's last heartbeat, in one read."""
    database.check_file()  # (a poll's new connection would make an empty file)
    with database.reading() as session:
        value = session.scalar(select(RegistryGeneration.value).where(RegistryGeneration.id == 1))
        beats = session.execute(
            select(HealthdHeartbeat.instance, HealthdHeartbeat.role, HealthdHeartbeat.beat_at)
        ).all()
    instances = tuple(
        HealthdInstance(instance or "healthd", role or "active", beat_at)
        for instance, role, beat_at in beats
    )
    return int(value or 0), instances


def active_beat(instances: Iterable[HealthdInstance]) -> datetime | None:
    """The last heartbeat of an active healthd (None: none seen)."""
    return max((i.beat_at for i in instances if i.role == "active"), default=None)


def load_snapshot(database: Database) -> RegistrySnapshot:
    """Every active registration, read in one transaction with its generation."""
    database.check_file()  # (a poll's new connection would make an empty file)
    with database.reading() as session:
        generation = session.scalar(
            select(RegistryGeneration.value).where(RegistryGeneration.id == 1)
        )
        rows = session.scalars(
            select(ModelServer).where(ModelServer.is_active.is_(True)).order_by(ModelServer.id)
        ).all()
        by_model: dict[str, list[Backend]] = {}
        created: dict[str, int] = {}
        details: dict[str, dict[str, str | int]] = {}
        claims = read_claims(session)
        for row in rows:
            stamp = int(row.registered_at.timestamp())
            for model, backend_model in row.served_models():
                if not may_serve(claims.get(model), row.id):
                    continue  # a name someone else owns
                by_model.setdefault(model, []).append(_backend(row, model, backend_model))
                created[model] = min(created.get(model, stamp), stamp)
                said = (row.model_details or {}).get(backend_model)
                if said:
                    merge_details(details.setdefault(model, {}), said)
        departed = _departed(session, served=by_model.keys())
    return RegistrySnapshot(
        generation=int(generation or 0),
        by_model={model: tuple(backends) for model, backends in by_model.items()},
        created=created,
        details=details,
        departed=departed,
        claims=claims,
    )


def _departed(session: Session, served: Iterable[str]) -> dict[str, float]:
    """model → when its last server left, for the models of registrations that went
    inactive within OFFLINE_MEMORY_SECONDS and that no active registration serves."""
    since = datetime.now(UTC) - timedelta(seconds=OFFLINE_MEMORY_SECONDS)
    gone = session.scalars(
        select(ModelServer).where(ModelServer.is_active.is_(False), ModelServer.updated_at >= since)
    ).all()
    serving = set(served)
    departed: dict[str, float] = {}
    for row in gone:
        left = row.updated_at.timestamp()
        for model, _ in row.served_models():
            if model not in serving:
                departed[model] = max(departed.get(model, left), left)
    return departed


def unknown_model(
    snapshot: RegistrySnapshot, model: str, may_use: Callable[[str], bool]
) -> NotFound:
    """A typo's 404, naming the models the caller could use instead: a group's key hears
    only of its group's models, and a model whose every server is draining takes no new
    request."""
    available = sorted(
        name
        for name, backends in snapshot.by_model.items()
        if may_use(name) and not all(backend.draining for backend in backends)
    )
    return NotFound(
        f"model {model!r} not found; available models: "
        f"{', '.join(available) if available else 'none registered'}",
        param="model",
    )


def offline_error(snapshot: RegistrySnapshot, model: str, now: float) -> ServiceUnavailable | None:
    """The answer for a model no server serves now that one did within a day: offline,
    a host may come back (not a typo's 404)."""
    left = snapshot.left_at(model, now)
    if left is None:
        return None
    when = datetime.fromtimestamp(left, UTC).isoformat(timespec="seconds")
    return ServiceUnavailable(
        f"model {model!r} is offline: its last server left at {when}",
        headers={"Retry-After": str(OFFLINE_RETRY_AFTER_SECONDS)},
    )


class SnapshotHolder:
    """Holds the current snapshot and wakes waiters when a new one arrives.

    `confirmed_at` (loop time) is when the snapshot was last found to match the
    database. `catch_up` brings it up to date now, one read for any number of
    callers at once: an admin write calls it before answering, so a registration
    is routable in this worker when its 201 returns, and a request for a model the
    snapshot does not know calls it once before answering 404 (a write through
    another worker may be newer than the last poll)."""

    def __init__(
        self,
        snapshot: RegistrySnapshot = EMPTY,
        on_change: Callable[[RegistrySnapshot], None] | None = None,
        database: Database | None = None,
    ) -> None:
        self.current = snapshot
        self.on_change = on_change
        self.database = database
        self.confirmed_at = -float("inf")
        self.healthd_beat: datetime | None = None  # the active one's, as of the last confirmation
        self.healthd_instances: tuple[HealthdInstance, ...] = ()
        self._changed = asyncio.Event()
        self._catching_up: SingleFlight[None, None] = SingleFlight()

    def replace(self, snapshot: RegistrySnapshot) -> None:
        self.current = snapshot
        if self.on_change is not None:
            self.on_change(snapshot)
        self._changed.set()
        self._changed = asyncio.Event()

    async def catch_up(self, *, unless_confirmed_within: float = 0.0) -> None:
        """Reload now if the database moved on (skipped when confirmed that recently)."""
        if self.database is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self.confirmed_at < unless_confirmed_within:
            return
        database = self.database
        await self._catching_up.run(None, lambda: refresh(self, database))

    def healthd_roles(self, now: datetime, within: float) -> dict[str, int]:
        """How many healthd of each role beat within `within` seconds (read with the
        generation: no database I/O here)."""
        counts = {"active": 0, "standby": 0}
        for found in self.healthd_instances:
            if (now - found.beat_at).total_seconds() <= within:
                counts[found.role] = counts.get(found.role, 0) + 1
        return counts

    def healthd_age(self, now: datetime) -> float | None:
        """Seconds since healthd's last heartbeat (None: none seen), read with the
        generation: no database I/O here."""
        return None if self.healthd_beat is None else (now - self.healthd_beat).total_seconds()

    async def wait_for_change(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
            return True
        except TimeoutError:
            return False


async def refresh(holder: SnapshotHolder, database: Database) -> None:
    """Reload if the generation moved; either way the snapshot is now confirmed."""
    started = asyncio.get_running_loop().time()
    generation, instances = await asyncio.to_thread(read_generation_and_beats, database)
    holder.healthd_instances, holder.healthd_beat = instances, active_beat(instances)
    if generation != holder.current.generation:
        holder.replace(await asyncio.to_thread(load_snapshot, database))
    holder.confirmed_at = started


MAX_WATCH_BACKOFF = 5.0


async def watch_registry(
    holder: SnapshotHolder,
    database: Database,
    interval: float = POLL_SECONDS,
    on_ages: Callable[[float, float | None], None] = lambda snapshot, healthd: None,
    wake: asyncio.Event | None = None,
) -> None:
    """Keep `holder` current until cancelled; `wake` (set by a LISTEN on PostgreSQL)
    starts the next round at once. Any error (the database's or a bug's) is
    logged, the snapshot kept, and the reload tried again after a growing pause:
    routing never stops because one reload failed, and readiness (`/health/ready`)
    reports a snapshot that stays unconfirmed. After each round `on_ages` is told
    the snapshot's age and healthd's heartbeat's (None: never seen), in seconds."""
    delay = interval
    loop = asyncio.get_running_loop()
    while True:
        try:
            await refresh(holder, database)
            if delay > interval:
                log.info("registry reload recovered")
            delay = interval
        except Exception as error:
            if delay == interval:
                log.warning(
                    "registry reload failed; routing from the last snapshot",
                    error=str(error),
                    error_type=type(error).__name__,
                    exc_info=not isinstance(error, SQLAlchemyError),
                )
            delay = min(MAX_WATCH_BACKOFF, delay * 2)
        on_ages(loop.time() - holder.confirmed_at, holder.healthd_age(utcnow()))
        await pause(delay, wake)


async def pause(seconds: float, wake: asyncio.Event | None) -> None:
    """Sleep `seconds`, or less when `wake` is set (and clear it)."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    wake.clear()
