"""The health-checker daemon: probe every active backend on its own schedule.

One loop ticks every TICK_SECONDS: it reloads the list of backends when the
registry changed, starts the probes that are due (at most CONCURRENCY at
once; a hanging backend only holds its own slot until its timeout), and
writes the results gathered since the last tick in one transaction. A write
that fails (database locked, say) is kept and retried on the next tick. Every
HEARTBEAT_SECONDS a tick that reached the database writes healthd's heartbeat.
A database file deleted or replaced under it stops the daemon: the gateway may
be on the old file, and whatever healthd writes would not reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from healthd import store
from healthd.canary import RECENT_SECONDS, CanaryResult, canary, loaded_models, to_check
from healthd.metrics import record_probe
from healthd.notify import Notification, deliver
from healthd.policy import next_delay
from shared.db import Database, DatabaseFileGone
from shared.logging import Redactor, get_logger
from shared.models import utcnow
from shared.probe import ProbeResult, missing_model, probe_backend
from shared.settings import Settings
from shared.upstream import Transport

TICK_SECONDS = 0.25
CONCURRENCY = 500
PRUNE_EVERY_SECONDS = 60.0
MAX_DATABASE_BACKOFF = 10.0
HEARTBEAT_SECONDS = 1.0
# A healthd silent this long is gone: its heartbeat row goes (at the next pruning).
INSTANCES_KEPT = timedelta(minutes=10)

ACTIVE, STANDBY = "active", "standby"

log = get_logger("health_checker")


def instance_name() -> str:
    """This healthd's name in the heartbeats: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


STOP_DELIVERY_SECONDS = 2.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        transport: Transport,
        *,
        redactor: Redactor | None = None,
        notifications: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        instance: str | None = None,
        resume: bool = False,
    ) -> None:
        """`instance` names this healthd in its heartbeat ("host:pid"). `resume`: the
        first probes keep the schedule of the history (each backend is due an interval
        after its last check), for a standby that takes over from an active healthd."""
        self.settings = settings
        self.redactor = redactor
        self.database = database
        self.transport = transport
        # Webhooks go out through a transport without the configured servers' exemption
        # from the address guard: that exemption is for probing those servers, not for
        # a host's notify_url that names one of them (or anything beside them).
        self.notifications = notifications or transport
        self.clock = clock
        self.rng = rng
        self.targets: dict[str, store.Target] = {}
        self.due: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.pending: list[store.CheckResult] = []
        self.generation: int | None = None
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.last_prune = 0.0
        self.last_beat = -float("inf")
        self.stopped_by: DatabaseFileGone | None = None  # raised by run() once it cleaned up
        self.deliveries: set[asyncio.Task[bool]] = set()  # notifications being sent
        self.instance = instance or instance_name()
        self.resume = resume
        self.rounds: dict[str, int] = {}  # checks per server: every N-th sends canaries

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set, then write what was gathered and return."""
        log.info("healthd started", interval=self.settings.health_check_interval_seconds)
        starter = asyncio.create_task(self.start_due_probes(stop), name="healthd-scheduler")
        try:
            await self.write_results(stop)
        finally:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter
        for task in self.in_flight.values():
            task.cancel()
        await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        try:
            await self.flush()
        except SQLAlchemyError as error:
            log.error(
                "could not write the last results before stopping",
                results=len(self.pending),
                error=str(error),
            )
        # Notifications still retrying get a moment to land, then are given up.
        if self.deliveries:
            await asyncio.wait(self.deliveries, timeout=STOP_DELIVERY_SECONDS)
            for delivery in list(self.deliveries):
                delivery.cancel()
        log.info("healthd stopped")
        if self.stopped_by is not None:
            raise self.stopped_by

    async def start_due_probes(self, stop: asyncio.Event) -> None:
        """Start every probe that is due, each tick; never waits on database writes."""
        while not stop.is_set():
            now = self.clock()
            for server_id in list(self.targets):
                if server_id not in self.in_flight and self.due.get(server_id, 0.0) <= now:
                    self.in_flight[server_id] = asyncio.create_task(self.check(server_id))
            await asyncio.sleep(TICK_SECONDS)

    async def write_results(self, stop: asyncio.Event) -> None:
        """The database side of each tick: targets, requested checks, results, pruning."""
        database_failures = 0
        while not stop.is_set():
            try:
                await self.tick()
                if database_failures:
                    log.info("database reachable again", after_failures=database_failures)
                database_failures = 0
            except DatabaseFileGone as error:
                log.error("the database file is gone; healthd stops", problem=str(error))
                self.stopped_by = error
                return
            except SQLAlchemyError as error:
                # Busy, locked or gone: keep the results, back off, never crash.
                database_failures += 1
                log.warning(
                    "database unavailable; will retry",
                    error=str(error),
                    pending_results=len(self.pending),
                )
            pause = min(MAX_DATABASE_BACKOFF, TICK_SECONDS * 2 ** min(database_failures, 5))
            try:
                async with asyncio.timeout(pause if database_failures else TICK_SECONDS):
                    await stop.wait()
            except TimeoutError:
                pass

    async def tick(self) -> None:
        self.database.check_file()
        for expired in await asyncio.to_thread(store.expire_leases, self.database, utcnow()):
            log.info("lease expired: server deactivated", registration_id=expired.registration_id)
            self.send(expired.notify)
        for asked in await asyncio.to_thread(store.take_outbox, self.database):
            self.send(asked)
        await self.refresh_targets()
        now = self.clock()
        for server_id in await asyncio.to_thread(store.take_check_requests, self.database):
            if server_id in self.targets:
                self.due[server_id] = now
        await self.flush()
        if now - self.last_prune >= PRUNE_EVERY_SECONDS:
            self.last_prune = now
            await asyncio.to_thread(store.prune_history, self.database)
            await asyncio.to_thread(
                store.forget_instances, self.database, utcnow() - INSTANCES_KEPT
            )
        if now - self.last_beat >= HEARTBEAT_SECONDS:
            await asyncio.to_thread(
                store.beat, self.database, utcnow(), os.getpid(), self.instance, ACTIVE
            )
            self.last_beat = now

    def send(self, notification: Notification | None) -> None:
        """Deliver a notification in the background (retried; given up at stop)."""
        if notification is None:
            return
        task = asyncio.create_task(deliver(self.notifications, notification))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def refresh_targets(self) -> None:
        generation = await asyncio.to_thread(store.read_generation, self.database)
        if generation == self.generation:
            return
        self.generation = generation
        fresh = await asyncio.to_thread(store.load_targets, self.database)
        last = await asyncio.to_thread(store.last_checks, self.database) if self.resume else {}
        self.resume = False
        now = self.clock()
        for server_id, target in fresh.items():
            if self.redactor is not None:
                self.redactor.add_secret(target.api_key)
            known = self.targets.get(server_id)
            if known is None and server_id in last and target.health_status == "healthy":
                # Taken over from another healthd: due an interval after its last check.
                age = (utcnow() - last[server_id]).total_seconds()
                self.due[server_id] = now + min(self.interval, max(0.0, self.interval - age))
                self.failures[server_id] = target.consecutive_failures
            elif known is None:
                # New (or healthd just started, TC-HEALTH-005): spread first probes a little.
                self.due[server_id] = now + self.rng() * min(1.0, self.interval)
                self.failures[server_id] = target.consecutive_failures
            elif (
                known.endpoint_url != target.endpoint_url
                or known.api_key != target.api_key
                or (target.health_status == "unhealthy" and known.health_status != "unhealthy")
            ):
                # Moved, new key, or written unhealthy (by healthd itself, or an operator's
                # tool; the gateway asks through check_requests instead): look at it now.
                self.due[server_id] = now
        for server_id in set(self.targets) - set(fresh):
            self.due.pop(server_id, None)
            self.failures.pop(server_id, None)
        self.targets = fresh

    @property
    def interval(self) -> float:
        return self.settings.health_check_interval_seconds

    async def probe(self, target: store.Target) -> ProbeResult:
        """The transport resolves the name, refuses a forbidden address and connects
        to the address it checked (unless ALLOW_PRIVATE_BACKENDS)."""
        result = await probe_backend(
            self.transport,
            target.endpoint_url,
            target.api_key,
            timeout=self.settings.health_check_timeout_seconds,
        )
        return missing_model(result, target.expected_model)

    async def check(self, server_id: str) -> None:
        try:
            target = self.targets.get(server_id)
            if target is None:
                return
            async with self.slots:
                started = self.clock()
                result = await self.probe(target)
                canaries = await self.canaries(target, result) if result.healthy else ()
            record_probe(result.healthy, result.response_time_ms / 1000)
            self.pending.append(store.CheckResult(server_id, utcnow(), result, canaries))
            failures = 0 if result.healthy else self.failures.get(server_id, 0) + 1
            self.failures[server_id] = failures
            # From the probe's start: a hanging backend's timeout does not stretch its gap.
            self.due[server_id] = started + next_delay(
                healthy=result.healthy,
                consecutive_failures=failures,
                interval=self.interval,
                jitter_draw=self.rng(),
            )
        finally:
            self.in_flight.pop(server_id, None)

    async def canaries(self, target: store.Target, result: ProbeResult) -> tuple[CanaryResult, ...]:
        """Every CANARY_EVERY_CHECKS-th check of a server that answered its model list
        (its first included): a 1-token generation per model it serves (healthd/canary.py)."""
        every = self.settings.canary_every_checks
        turn = self.rounds.get(target.id, 0)
        self.rounds[target.id] = turn + 1
        if every <= 0 or turn % every:
            return ()
        served = [(name, backend) for name, backend in target.served if backend in result.models]
        if not served:
            return ()
        timeout = self.settings.health_check_timeout_seconds
        loaded = await loaded_models(self.transport, target.endpoint_url, target.api_key, timeout)
        recent: set[str] = set()
        if loaded is not None:
            since = utcnow() - timedelta(seconds=RECENT_SECONDS)
            recent = (await asyncio.to_thread(store.recent_models, self.database, since)).get(
                target.id, set()
            )
        chosen = to_check(served, loaded, recent, turn // every)
        return tuple(
            [
                await canary(self.transport, target.endpoint_url, target.api_key, n, b, timeout)
                for n, b in chosen
            ]
        )

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            transitions = await asyncio.to_thread(
                store.record_results,
                self.database,
                batch,
                max_failures=self.settings.max_consecutive_failures,
                auto_deregister=self.settings.auto_deregister,
            )
        except SQLAlchemyError:
            self.pending = batch + self.pending  # nothing is lost; retried next tick
            raise
        for change in transitions:
            self.send(change.notify)
            known = self.targets.get(change.server_id)
            if known is not None:
                # Our own write: not a reason to look again at once (see refresh_targets).
                self.targets[change.server_id] = dataclasses.replace(
                    known, health_status=change.new_status
                )
            if change.deregistered:
                log.warning(
                    "server deregistered after consecutive failures",
                    registration_id=change.server_id,
                    endpoint_url=change.endpoint_url,
                    reason=change.reason,
                )
            elif change.new_status == "healthy":
                log.info(
                    "server is healthy",
                    registration_id=change.server_id,
                    endpoint_url=change.endpoint_url,
                    previous=change.old_status,
                )
            else:
                log.warning(
                    "server is unhealthy",
                    registration_id=change.server_id,
                    endpoint_url=change.endpoint_url,
                    previous=change.old_status,
                    reason=change.reason,
                )
