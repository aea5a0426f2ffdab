"""The gateway's Starlette application, built by a factory (no import-time state)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from gateway.accounting import feedback as feedback_module
from gateway.accounting import metrics, mismatch
from gateway.accounting.request_log import RequestLog
from gateway.admin import registrations
from gateway.admin.api import admin_routes
from gateway.admin.auth import AdminCredentials, AdminKeyMiddleware
from gateway.admin.drain import drain_routes
from gateway.admin.leases import lease_routes, lease_streams_end, token_known
from gateway.admin.server_views import server_routes
from gateway.admin.stats import stats_routes
from gateway.admin.system import system_routes
from gateway.admission.access import (
    ClientAccess,
    backend_slots,
    close_counters,
    default_limits,
    open_counters,
)
from gateway.admission.keyring import (
    KeyRingHolder,
    static_clients,
    watch_keys,
)
from gateway.catalog.discovery import discovery_routes
from gateway.catalog.me import me_routes
from gateway.catalog.models import models_routes
from gateway.catalog.ollama import ollama_routes
from gateway.context import GatewayContext
from gateway.errors import exception_handlers
from gateway.hosts.names_api import names_routes
from gateway.hosts.token_api import token_routes
from gateway.liveness import (
    HEALTHD_STALE_INTERVALS,
    health_route,
    package_version,
    ready_route,
)
from gateway.middleware import (
    BodySizeLimitMiddleware,
    QueryTextMiddleware,
    RequestIdMiddleware,
    cors_options,
)
from gateway.openapi import docs_endpoint, openapi_endpoint
from gateway.people.routes import people_routes
from gateway.prometheus import metrics_route
from gateway.proxy.endpoint import Dispatcher, proxy_routes
from gateway.proxy.runtime import ProxyRuntime
from gateway.proxy.stored_responses import stored_response_routes
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.learned import Learned
from gateway.routing.outlier import OutlierPolicy
from gateway.routing.registry import (
    LISTENING_POLL_SECONDS,
    POLL_SECONDS,
    RegistrySnapshot,
    SnapshotHolder,
    load_snapshot,
    watch_registry,
)
from gateway.routing.reported.scraper import Scraper
from gateway.translate.table import error_shape_for
from gateway.web.pages import web_routes
from shared.cluster import shared_redis
from shared.db import Database, ensure_schema_current
from shared.logging import LogOutputs, Redactor, configure_logging, get_logger
from shared.models import utcnow
from shared.settings import Settings, load_settings
from shared.startup import redactor_for
from shared.upstream import UpstreamPool, probe_transport
from shared.urls import Resolver, system_resolver

TITLE = "Multiverse Inference Gateway"
ADMIN_MAX_BODY_BYTES = 1024 * 1024

log = get_logger("api")


def record_ages(
    holder: SnapshotHolder, settings: Settings, snapshot: float, healthd: float | None
) -> None:
    """After each registry round: the ages, and how many healthd of each role beat."""
    metrics.record_ages(snapshot, healthd)
    within = HEALTHD_STALE_INTERVALS * settings.health_check_interval_seconds
    metrics.record_healthd_instances(holder.healthd_roles(utcnow(), within))


def registry_listener(database: Database) -> tuple[asyncio.Event, asyncio.Task[None] | None]:
    """On PostgreSQL, a task LISTENing for registry changes, and the event it sets."""
    changed = asyncio.Event()
    if database.engine.dialect.name != "postgresql":
        return changed, None
    from shared.cluster.listen import listen  # psycopg: only with PostgreSQL

    url = database.engine.url.render_as_string(hide_password=False)
    task = asyncio.create_task(listen(url, changed.set), name="registry-listen")
    return changed, task


def create_app(
    settings: Settings,
    database: Database,
    *,
    redactor: Redactor | None = None,
    resolver: Resolver = system_resolver,
    log_outputs: LogOutputs | None = None,
) -> Dispatcher:
    """Build the app. The caller owns configuration; nothing is read from the environment.

    `log_outputs` (what configure_logging returned) lets the proxy write its
    line per request straight to them, in batches (see gateway/accounting/request_log.py)."""
    context = GatewayContext(
        settings=settings,
        database=database,
        redactor=redactor or Redactor(),
        resolver=resolver,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, asyncio.Event]]:
        ensure_schema_current(database.engine)
        runtime = await build_runtime(context, log_outputs)
        changed, listener = registry_listener(database)
        watcher = asyncio.create_task(
            watch_registry(
                runtime.holder,
                database,
                interval=POLL_SECONDS if listener is None else LISTENING_POLL_SECONDS,
                on_ages=functools.partial(record_ages, runtime.holder, settings),
                wake=changed,
            ),
            name="registry-watch",
        )
        context.registry_watch = watcher
        background = [
            *([] if listener is None else [listener]),
            watcher,
            asyncio.create_task(
                feedback_module.flush_forever(runtime.feedback, database), name="feedback-flush"
            ),
            asyncio.create_task(flush_metrics_forever(runtime), name="metrics-flush"),
            asyncio.create_task(watch_keys(runtime.access.keys), name="keys-watch"),
            asyncio.create_task(runtime.scraper.run(), name="load-scraper"),
        ]
        for name, keeper in (("counters", runtime.access.store), ("slots", runtime.slots)):
            keep_alive = getattr(keeper, "keep_alive", None)  # (Redis's lapsing members)
            if keep_alive is not None:
                background.append(asyncio.create_task(keep_alive(), name=f"{name}-keep-alive"))
        probes = context.probes = probe_transport(settings, resolver)
        context.proxy = runtime
        freeze_startup_objects()
        log.info("gateway started", host=settings.host, port=settings.port)
        try:
            yield lease_streams_end()  # set by the worker's protocol when shutdown begins
        finally:
            await cancel_all(background)
            await feedback_module.flush(runtime.feedback, database)
            metrics.flush(runtime.balancer.in_flight)
            runtime.transport.close()
            runtime.large_bodies.shutdown(wait=False, cancel_futures=True)
            runtime.responses.close()
            close_counters(runtime.access.store)
            if runtime.responses.redis is not None:
                await runtime.responses.redis.close()
            probes.close()
            runtime.request_log.drain()
            context.proxy = None
            context.probes = None
            log.info("gateway stopped")

    middleware = [Middleware(RequestIdMiddleware)]
    if settings.enable_cors:
        middleware.append(Middleware(CORSMiddleware, **cors_options(settings)))
    routes = [
        health_route(),
        ready_route(),
        metrics_route(),
        # No redirects for a trailing slash: a 307 built from the client's Host header
        # is a gift to an attacker, and clients do not follow one for a POST anyway.
        Mount(
            "/v1",
            app=Router(
                [
                    *proxy_routes(context, "/v1"),
                    *stored_response_routes(context),
                    *models_routes(),
                    *me_routes(),
                ],
                redirect_slashes=False,
            ),
        ),
        *proxy_routes(context, ""),
        *ollama_routes(),
        *discovery_routes(),
        Mount(
            "/admin",
            app=Router(
                [
                    *admin_routes(),
                    *server_routes(),
                    *drain_routes(),
                    *lease_routes(),
                    *system_routes(),
                    *stats_routes(),
                    *people_routes(),
                    *names_routes(),
                    *token_routes(),
                ],
                redirect_slashes=False,
            ),
            middleware=[
                Middleware(
                    AdminKeyMiddleware,
                    credentials=AdminCredentials(
                        settings.admin_api_key.get_secret_value(),
                        [key.get_secret_value() for key in settings.registration_keys],
                    ),
                    token_hash_of=functools.partial(registrations.token_hash_of, database),
                    token_known=functools.partial(token_known, database),
                    token_registration=functools.partial(
                        registrations.registration_of_token, database
                    ),
                ),
                Middleware(BodySizeLimitMiddleware, max_bytes=ADMIN_MAX_BODY_BYTES),
                Middleware(QueryTextMiddleware),
            ],
        ),
        Route("/openapi.json", openapi_endpoint(TITLE, package_version()), include_in_schema=False),
        Route("/docs", docs_endpoint(TITLE), include_in_schema=False),
        *web_routes(),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs_static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(error_shape_for),
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.context = context
    return Dispatcher(app, routes)


async def build_runtime(context: GatewayContext, log_outputs: LogOutputs | None) -> ProxyRuntime:
    """The proxy's parts, the registry loaded; every snapshot's backend keys join the
    redactor (keys registered through another worker are redacted too)."""
    settings = context.settings
    feedback = feedback_module.Feedback(mismatch.MismatchPolicy.of(settings))
    redis = shared_redis(settings)  # one per worker: Responses owners, counters, slots

    def on_snapshot(snapshot: RegistrySnapshot) -> None:
        for backends in snapshot.by_model.values():
            for backend in backends:
                context.redactor.add_secret(backend.api_key)
        metrics.record_health(
            {
                (backend.registration_id, model): backend.healthy
                for model, backends in snapshot.by_model.items()
                for backend in backends
            }
        )

    defaults = default_limits(settings)
    keys = KeyRingHolder(
        context.database,
        defaults,
        static_clients([key.get_secret_value() for key in settings.client_api_keys], defaults),
    )
    await keys.refresh()
    initial = await asyncio.to_thread(load_snapshot, context.database)
    holder = SnapshotHolder(initial, on_change=on_snapshot, database=context.database)
    holder.confirmed_at = asyncio.get_running_loop().time()
    on_snapshot(initial)
    balancer = Balancer(
        settings.routing_strategy,
        settings.slow_start_seconds,
        learned=Learned(
            OutlierPolicy(
                consecutive=settings.outlier_consecutive_failures,
                base_seconds=settings.outlier_ejection_seconds,
                max_percent=settings.outlier_max_ejection_percent,
            )
        ),
    )
    transport = UpstreamPool(
        verify_tls=settings.verify_backend_tls,
        connect_timeout=settings.connect_timeout_seconds,
        resolver=context.resolver,
        allow_private=settings.allow_private_backends,
        exempt=settings.configured_endpoints,
        max_connections=settings.backend_max_connections,
    )
    return ProxyRuntime(
        settings=settings,
        holder=holder,
        balancer=balancer,
        feedback=feedback,
        responses=ResponseOwners(feedback.record_response_owner, context.database, redis=redis),
        access=ClientAccess(settings, keys, await open_counters(settings, redis, context.database)),
        request_log=RequestLog(
            log_outputs, context.redactor, level=settings.log_level, component="api"
        ),
        transport=transport,
        scraper=Scraper(holder, balancer, transport),
        slots=backend_slots(settings, redis),
    )


async def flush_metrics_forever(runtime: ProxyRuntime) -> None:
    """Hand the request path's counts to prometheus_client every second."""
    while True:
        await asyncio.sleep(metrics.FLUSH_SECONDS)
        metrics.flush(runtime.balancer.in_flight)


def freeze_startup_objects() -> None:
    """Everything loaded so far lives as long as the process: move it out of the
    collector's sight, so a full collection does not walk ~100k objects (tens of
    milliseconds) in the middle of requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app_from_environment() -> Dispatcher:
    """The factory uvicorn calls in each worker: settings, logging, database, app."""
    settings = load_settings()
    redactor = redactor_for(settings)
    outputs = configure_logging(
        process="gateway",
        level=settings.log_level,
        log_dir=settings.log_dir,
        default_component="api",
        redactor=redactor,
    )
    return create_app(
        settings,
        Database.connect(settings.database_url),
        redactor=redactor,
        log_outputs=outputs,
    )
