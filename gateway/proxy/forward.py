"""Forwarding one client request: pick a backend, try it, fail over, answer.

The body goes to the backend byte for byte; it is parsed only to read `model`
and `stream`. Backends come from the in-memory snapshot (no database I/O
here). Each try is an `Attempt` (gateway/accounting/attempt.py), settled exactly once. A
backend that fails before the client got a byte is failed over.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

from gateway.accounting import metrics
from gateway.accounting.attempt import Attempt, Observer
from gateway.accounting.stream_usage import USAGE_OPTION_PATHS, with_usage_asked, without_usage
from gateway.accounting.usage import extract_model, extract_usage
from gateway.proxy import backend_errors
from gateway.proxy.apis import RESPONSES_PATH
from gateway.proxy.backend_errors import error_answer, lacks_endpoint, refuses_usage_option
from gateway.proxy.bodies import Target, with_model
from gateway.proxy.client_watch import ClientWatch
from gateway.proxy.relay import (
    MAX_RESPONSE_BYTES,
    BufferedResponse,
    EventReader,
    RelayedStream,
    relayed_headers,
    stream_format_of,
    upstream_headers,
)
from gateway.proxy.runtime import ProxyRuntime
from gateway.proxy.verdict import no_answer, parse_retry_after
from gateway.routing.affinity import response_id_in_events, response_id_of
from gateway.routing.choice import Choice, request_hint
from gateway.routing.learned import Trait
from gateway.routing.policy import Backend, parse_tags
from gateway.routing.registry import CATCH_UP_AFTER_SECONDS, offline_error, unknown_model
from gateway.translate.table import error_shape_for
from shared.errors import ServiceUnavailable
from shared.failures import FailureKind
from shared.upstream import (
    FailedStatus,
    ResponseStream,
    UpstreamError,
    UpstreamRequest,
    UpstreamTimeout,
    is_failed_status,
)
from shared.upstream.trace import TraceContext


@dataclass(frozen=True)
class Incoming:
    """What the proxy needs of a client request (read once by the endpoint)."""

    path: str
    body: bytes
    content_type: str | None
    tags_header: str | None
    request_id: str
    trace: TraceContext | None = None
    model_span: tuple[int, int] | None = None  # the model's value in a multipart body
    method: str = "POST"
    endpoint: str | None = None  # the API's path, when `path` carries an id (a metric label)
    charge: Observer | None = None  # the client's claim on its limits, told of each answer
    client: str = ""  # who asks: its turn in the fair queue when the pool is full
    priority: int = 1  # its weight there, 1 to 100
    session: str | None = None  # X-Session-ID: the affinity key, when the client sets one
    may_use: Callable[[str], bool] = lambda model: True  # the models its key may use
    whole: bool = False  # a translated request for one JSON answer: any answer read whole


Answer = RelayedStream | BufferedResponse


class FullElsewhere(Exception):
    """Every slot of the backend is taken across the instances (Redis): not a failure."""


class Forwarder:
    """One client request: pick, try, fail over, answer.

    Every attempt shares the request's one deadline (REQUEST_TIMEOUT_SECONDS):
    no backend is tried once it has passed. A stream's first event must also
    come within FIRST_BYTE_TIMEOUT_SECONDS (a long prompt's prefill)."""

    def __init__(self, runtime: ProxyRuntime, incoming: Incoming, watch: ClientWatch) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.incoming = incoming
        self.watch = watch
        self.loop = asyncio.get_running_loop()
        # Deadlines on the loop's clock (uvloop's ticks in milliseconds), latency on a fine one.
        self.started = self.loop.time()
        self.started_precise = time.perf_counter()
        self.deadline = self.started + self.settings.request_timeout_seconds
        self.queue_deadline: float | None = None  # from its first wait (FullElsewhere: again)

    async def run(self, target: Target) -> Answer:
        runtime = self.runtime
        if not runtime.holder.current.backends(target.model):
            # Registered a moment ago, perhaps through another worker: look once.
            await runtime.holder.catch_up(unless_confirmed_within=CATCH_UP_AFTER_SECONDS)
        if not runtime.holder.current.backends(target.model):
            snapshot = runtime.holder.current
            raise offline_error(snapshot, target.model, time.time()) or unknown_model(
                snapshot, target.model, self.incoming.may_use
            )
        # A Responses API conversation continues on the backend that holds it.
        owner = None
        if target.previous_response_id is not None:
            owner = await runtime.responses.owner(target.previous_response_id)
        choice = Choice(
            runtime.holder,
            runtime.balancer,
            model=target.model,
            path=self.incoming.path,
            tags=parse_tags(self.incoming.tags_header),
            streaming=target.stream,
            owner=owner,
            hint=request_hint(
                runtime.balancer.strategy,
                runtime.holder.current.backends(target.model),
                target.members,
                self.incoming.session,
                len(self.incoming.body),
            ),
        )
        tried = choice.tried
        waited_since: float | None = None  # when the request began to wait for a recovery
        failures: list[UpstreamError] = []
        attempts = 1 + self.settings.max_retry_attempts
        recovery_deadline = self.started + self.settings.recovery_wait_seconds
        while len(tried) < attempts and self.loop.time() < self.deadline:
            backend = choice.pick()
            wanted = backend is not None and runtime.queue.wanted(backend.registration_id)
            if not tried and (backend is None or wanted) and choice.usable():
                # Full, or waiters could use it (a newcomer goes behind them): wait a turn.
                backend = await self._queued(choice)
            if backend is None:
                remaining = recovery_deadline - self.loop.time()
                if not tried and remaining > 0:
                    waited_since = waited_since or self.loop.time()
                    await runtime.holder.wait_for_change(min(remaining, 0.5))
                    continue
                if not tried:
                    raise ServiceUnavailable(
                        f"model {target.model!r} is unavailable: {choice.explain()}",
                        headers={"Retry-After": "5"},
                    )
                break
            if tried:
                metrics.RETRIES.labels(target.model).inc()
                runtime.feedback.failed_over(tried[-1], target.model)
            elif waited_since is not None:
                metrics.QUEUE_WAIT.labels(target.model).observe(self.loop.time() - waited_since)
            tried.append(backend.registration_id)
            # Asked only after a 404 or 405.
            others = functools.partial(choice.offered_elsewhere, attempts)
            peers = choice.backends
            try:
                return await self.attempt(
                    backend, peers, target, fail_over_404=others, lacks_on_404=owner is None
                )
            except FullElsewhere:  # its slots are all taken on other instances: wait a turn
                tried.pop()
                runtime.balancer.full_elsewhere(backend.registration_id)
            except UpstreamError as failure:
                failures.append(failure)
                if failure.kind is FailureKind.UNSENDABLE:
                    break  # the request itself cannot be sent: no backend would take it
        raise no_answer(
            target.model,
            failures,
            deadline_passed=self.loop.time() >= self.deadline,
            request_timeout=self.settings.request_timeout_seconds,
        )

    async def _queued(self, choice: Choice) -> Backend | None:
        """A slot, when the request's turn comes in the fair queue (every backend it could
        use is full); None when it is no longer a matter of capacity."""
        since = self.loop.time()
        if self.queue_deadline is None:
            self.queue_deadline = min(self.deadline, since + self.settings.queue_timeout_seconds)
        deadline = self.queue_deadline
        incoming = self.incoming
        with metrics.QUEUED.labels(choice.model).track_inprogress():
            try:
                return await self.runtime.queue.wait_for_slot(
                    choice, client=incoming.client, priority=incoming.priority, deadline=deadline
                )
            finally:
                metrics.QUEUE_WAIT.labels(choice.model).observe(self.loop.time() - since)

    async def run_on(self, backend: Backend) -> Answer:
        """A request about one stored response: only the backend holding it can answer."""
        try:
            return await self.attempt(
                backend, (backend,), Target(backend.model_name), lacks_on_404=False, slot=False
            )
        except UpstreamError as failure:
            raise no_answer(
                backend.model_name,
                [failure],
                deadline_passed=self.loop.time() >= self.deadline,
                request_timeout=self.settings.request_timeout_seconds,
            ) from None

    async def attempt(
        self,
        backend: Backend,
        peers: tuple[Backend, ...],
        target: Target,
        *,
        fail_over_404: Callable[[], bool] = lambda: False,
        lacks_on_404: bool = True,
        slot: bool = True,
    ) -> Answer:
        """One try on `backend`: its answer, or an UpstreamError (the attempt is accounted).

        A 404 or 405 whose body says the backend lacks the endpoint (not the model or
        an id), or a 501: remembered, and failed over while another backend of the
        model may have it (else passed on). Not so for a request about one stored
        response (`lacks_on_404` false): there a 404 is the backend's word on it.

        The body is prepared first (pure; a body that cannot be prepared takes no
        slot). The slot (with Redis, across instances too: FullElsewhere when there is
        none) and the backend's answer are then held by `held`, released when the block
        ends however it ends, or handed to the relayed stream. `slot` false: a request
        about one stored response, which only its backend can answer, takes none."""
        body = self._body_for(backend)
        ask_usage, whole = self._asks_usage(backend, target), self.incoming.whole
        # A stream's head and first event: within FIRST_BYTE_TIMEOUT_SECONDS too.
        deadline = self.deadline
        if target.stream:
            first_byte = self.loop.time() + self.settings.first_byte_timeout_seconds
            deadline = min(deadline, first_byte)
        async with AsyncExitStack() as held:
            await self._hold_slot(held, backend, slot)
            attempt = held.enter_context(self._attempt_on(backend, peers, target.model))
            upstream, ask_usage, data = await self._open(held, backend, deadline, body, ask_usage)
            status = upstream.status
            if status == 501 or (status in (404, 405) and lacks_on_404):
                data = data if data is not None else await self._read_whole(upstream)
                if lacks_on_404 and lacks_endpoint(status, data, self.incoming.path):
                    self.runtime.learned.learn(backend.key, Trait.LACKS_PATH, self.incoming.path)
                    if fail_over_404():
                        raise UpstreamError(
                            FailureKind.NOT_OFFERED,
                            f"the backend does not offer it (HTTP {status})",
                        )
            elif is_failed_status(status):
                retry_after = dict(upstream.headers).get(b"retry-after")
                raise FailedStatus(status, parse_retry_after(retry_after))
            headers = relayed_headers(upstream.headers, backend.registration_id)
            shape = error_shape_for(self.incoming.path)
            stream_format = stream_format_of(upstream.content_type, shape)
            if status == 200 and stream_format is not None and data is None and not whole:
                events = EventReader(upstream, stream_format)
                first = await self._first_events(events, deadline)
                attempt.first_event()
                if self.makes_responses:
                    await self._remember_owner(response_id_in_events(first), backend)
                return RelayedStream(
                    events,
                    first,
                    headers=headers,
                    idle_timeout=self.settings.stream_idle_timeout_seconds,
                    attempt=attempt,
                    watch=self.watch,
                    rewrite=without_usage if ask_usage else None,
                    held=held.pop_all(),  # the slot and the connection, now the stream's
                )
            if data is None:
                data = await self._read_whole(upstream)
            if whole and status == 200:
                backend_errors.check_whole(data, backend.api_key)  # (an UpstreamError: failed over)
            if self.makes_responses and status == 200:
                await self._remember_owner(response_id_of(data), backend)
            attempt.answered(status, extract_usage(data), extract_model(data))
            if status >= 400:
                return error_answer(status, headers, data, backend.api_key, self.incoming.path)
            return BufferedResponse(status, headers, data)
        raise AssertionError("unreachable")  # (mypy: an exit stack may swallow exceptions)

    async def _hold_slot(self, held: AsyncExitStack, backend: Backend, slot: bool) -> None:
        """Unwound last: once the attempt freed the slot, the next waiter in turn gets it
        (with Redis, once the shared slot is given back too)."""
        rid, limit, slots = backend.registration_id, backend.max_concurrent, self.runtime.slots
        freed = functools.partial(self.runtime.queue.freed, rid, self.incoming.client)
        if slots is None or limit is None or not slot:
            held.callback(freed)
        elif not await held.enter_async_context(slots.held(rid, limit, freed)):
            raise FullElsewhere

    def _asks_usage(self, backend: Backend, target: Target) -> bool:
        """Whether to ask for a stream's tokens the client did not ask for (they are
        taken out of its stream again)."""
        return (
            target.stream
            and not target.usage_asked
            and self.settings.stream_usage_accounting
            and self.incoming.path in USAGE_OPTION_PATHS
            and not self.runtime.learned.has(backend.key, Trait.REFUSES_USAGE_OPTION)
        )

    def _attempt_on(self, backend: Backend, peers: tuple[Backend, ...], model: str) -> Attempt:
        runtime = self.runtime
        return Attempt(
            backend=backend,
            peers=peers,
            model=model,
            request_id=self.incoming.request_id,
            trace_id=self.incoming.trace.trace_id if self.incoming.trace else None,
            endpoint=self.incoming.endpoint or self.incoming.path,
            started=self.started_precise,
            balancer=runtime.balancer,
            feedback=runtime.feedback,
            request_log=runtime.request_log,
            observer=self.incoming.charge,
        )

    async def _open(
        self, held: AsyncExitStack, backend: Backend, deadline: float, body: bytes, ask: bool
    ) -> tuple[ResponseStream, bool, bytes | None]:
        """The backend's answer, held by `held`; whether it was asked for the stream's
        usage; and its body when that had to be read already (a 400 that did not
        refuse the option). A backend that refuses the option is asked again without
        it, remembered for a while when the second answer is no error (a 400 that only
        seemed to name the option, echoing the request, was the client's: passed on)."""
        if ask:
            async with AsyncExitStack() as first:
                upstream = await first.enter_async_context(
                    self._stream(backend, deadline, with_usage_asked(body))
                )
                if upstream.status not in (400, 422):
                    held.push_async_exit(first.pop_all())
                    return upstream, True, None
                said = await self._read_whole(upstream)
                if not refuses_usage_option(upstream.status, said):
                    held.push_async_exit(first.pop_all())
                    return upstream, True, said
            # (its refusal was read whole: the connection is back in the pool)
        upstream = await held.enter_async_context(self._stream(backend, deadline, body))
        if ask and upstream.status < 400:
            self.runtime.learned.learn(backend.key, Trait.REFUSES_USAGE_OPTION)
        return upstream, False, None

    async def _read_whole(self, upstream: ResponseStream) -> bytes:
        return await upstream.read_all(MAX_RESPONSE_BYTES, self.deadline)

    @property
    def makes_responses(self) -> bool:
        return self.incoming.path == RESPONSES_PATH and self.incoming.method == "POST"

    async def _remember_owner(self, response_id: str | None, backend: Backend) -> None:
        """Before the client sees the id: a follow-up may reach another worker at once."""
        if response_id is not None:
            await self.runtime.responses.remember(response_id, backend.registration_id)

    def _body_for(self, backend: Backend) -> bytes:
        """The client's body, with the model renamed for a backend that has a backend_model."""
        incoming = self.incoming
        if backend.upstream_model is None:
            return incoming.body
        return with_model(incoming.body, backend.upstream_model, incoming.model_span)

    def _stream(
        self, backend: Backend, deadline: float, body: bytes
    ) -> AbstractAsyncContextManager[ResponseStream]:
        incoming = self.incoming
        request = UpstreamRequest(
            backend.base_url,
            incoming.path,
            upstream_headers(backend, incoming.content_type, incoming.request_id, incoming.trace),
            body,
            method=incoming.method,
        )
        return self.runtime.transport.stream(request, deadline)

    async def _first_events(self, events: EventReader, deadline: float) -> bytes:
        try:
            first = await events.read(deadline)
        except UpstreamTimeout:
            if deadline >= self.deadline:
                raise
            limit = self.settings.first_byte_timeout_seconds
            raise UpstreamTimeout(
                f"no first event within FIRST_BYTE_TIMEOUT_SECONDS ({limit:g}s)"
            ) from None
        if not first:
            raise UpstreamError(FailureKind.TRUNCATED, "the stream ended before its first event")
        return first
