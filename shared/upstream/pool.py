"""Connections to backends: dialled (dialing.py), kept alive, limited, swept.

Per origin, at most `max_connections` are open (BACKEND_MAX_CONNECTIONS); a
request that finds none free waits for one, within its deadline, first come
first served: a freed connection (or the room a closed one leaves) is handed
to the longest waiter, never taken by a request that came later (with
barging, the tail latency was several times the median: README, Performance). An origin's
connections and line are one `OriginPool`, and a request that stops waiting takes
only itself out of the line (never the line, which others may have joined). An idle
connection is kept `keepalive_seconds`, less when the backend's Keep-Alive
header says it closes sooner, so a pooled connection is rarely one the
backend is closing; the most recently used is taken first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

from shared.settings import Settings
from shared.upstream.connection import Connection, UpstreamResponse
from shared.upstream.dialing import Dialer
from shared.upstream.errors import Disconnected, PoolTimeout
from shared.upstream.framing import Origin, encode_request, parse_origin
from shared.upstream.transport import UpstreamRequest
from shared.urls import Endpoint, Resolver

DEFAULT_MAX_CONNECTIONS = 100
_KEEP_ALIVE_TIMEOUT = re.compile(rb"timeout\s*=\s*(\d+)", re.IGNORECASE)


def keepalive_for(header: bytes | None, default: float) -> float:
    """How long to keep a connection idle, given the backend's Keep-Alive header:
    a second less than it promises, never more than `default`."""
    if header is None:
        return default
    found = _KEEP_ALIVE_TIMEOUT.search(header)
    if found is None:
        return default
    return max(0.0, min(default, int(found.group(1)) - 1.0))


@dataclass(eq=False)
class OriginPool:
    """One origin's state, kept together so that no part outlives the rest: its idle
    connections (the most recently used last), how many are open (connected or
    connecting, idle ones included) and the requests waiting in line for one.

    A waiter is a future resolved with a connection, or with None: room to dial
    one (its place in `open` already taken)."""

    idle: list[Connection] = field(default_factory=list)
    open: int = 0
    waiters: deque[asyncio.Future[Connection | None]] = field(default_factory=deque)

    @property
    def unused(self) -> bool:
        return not self.open and not self.idle and not self.waiters

    def next_waiter(self) -> asyncio.Future[Connection | None] | None:
        """The longest waiter still waiting, taken out of the line."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def leave(self, waiter: asyncio.Future[Connection | None]) -> None:
        """Take `waiter`, and nothing else, out of the line (if it is still in it)."""
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)


class Exchange:
    """`async with pool.stream(request, deadline) as response`: sends on entering, and
    on leaving releases the answer (its connection goes back to the pool when the body
    was read whole, and is closed otherwise). A class, not a generator: it is on every
    request's path, where @asynccontextmanager's machinery cost a few microseconds."""

    __slots__ = ("deadline", "pool", "request", "response")

    def __init__(self, pool: UpstreamPool, request: UpstreamRequest, deadline: float) -> None:
        self.pool = pool
        self.request = request
        self.deadline = deadline
        self.response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        self.response = await self.pool._send(self.request, self.deadline)
        return self.response

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.response is not None:
            self.response.release()  # (an incomplete answer's connection is closed)


class UpstreamPool:
    """Keep-alive connections per origin, most recently used first (a `Transport`)."""

    def __init__(
        self,
        *,
        verify_tls: bool,
        connect_timeout: float,
        resolver: Resolver,
        allow_private: bool,
        exempt: frozenset[Endpoint] = frozenset(),
        keepalive_seconds: float = 4.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        ssl_context = ssl.create_default_context()
        if not verify_tls:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        self.dialer = Dialer(
            resolver=resolver,
            allow_private=allow_private,
            exempt=exempt,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
        )
        # Shorter than the usual server keep-alive (uvicorn 5 s, llama.cpp 5 s).
        self.keepalive_seconds = keepalive_seconds
        self.max_connections = max_connections
        # Present while the origin has a connection open or a request waiting.
        self.origins: dict[Origin, OriginPool] = {}
        self.sweeping: asyncio.TimerHandle | None = None

    def stream(self, request: UpstreamRequest, deadline: float) -> Exchange:
        """The answer, held for the block: released when read whole, closed otherwise."""
        return Exchange(self, request, deadline)

    async def _send(self, request: UpstreamRequest, deadline: float) -> UpstreamResponse:
        """Send the request and wait for the answer's status and headers."""
        origin = parse_origin(request.base_url)
        data = encode_request(origin, request.path, request.headers, request.body, request.method)
        head = request.method == "HEAD"
        connection = await self._obtain(origin, deadline)
        if not connection.fresh:
            try:
                return await self._exchange(connection, data, deadline, head)
            except Disconnected as error:
                # A pooled connection found closed before the request was written:
                # the backend cannot have seen it, so it goes out again on a new
                # connection. Anything else may have reached the backend (which may be
                # generating): the attempt failed, and only the caller may try again.
                if not error.unsent:
                    raise
            connection = await self._obtain(origin, deadline, new=True)
        return await self._exchange(connection, data, deadline, head)

    async def _exchange(
        self, connection: Connection, request: bytes, deadline: float, head: bool
    ) -> UpstreamResponse:
        response = connection.send(request, head=head)
        try:
            await response.wait_headers(deadline)
        except BaseException:
            response.close()
            raise
        return response

    def _state(self, origin: Origin) -> OriginPool:
        state = self.origins.get(origin)
        if state is None:
            state = self.origins[origin] = OriginPool()
        return state

    def _forget_if_unused(self, origin: Origin, state: OriginPool) -> None:
        if state.unused and self.origins.get(origin) is state:
            del self.origins[origin]

    async def _obtain(self, origin: Origin, deadline: float, *, new: bool = False) -> Connection:
        """A kept-alive connection, or a new one while the origin is below its limit;
        else wait for either, until `deadline`."""
        state = self._state(origin)
        connection = None if new else self._take(state)
        if connection is not None:
            return connection
        if state.open < self.max_connections and not state.waiters:
            state.open += 1  # a place taken while connecting
            return await self._dial(origin, deadline)
        handed = await self._wait_for_room(origin, state, deadline)
        return handed if handed is not None else await self._dial(origin, deadline)

    async def _dial(self, origin: Origin, deadline: float) -> Connection:
        """A new connection, in a place already counted in `open`."""
        loop = asyncio.get_running_loop()
        try:
            connection = await self.dialer.dial(
                origin, deadline, lambda: Connection(loop, origin, self.put)
            )
        except BaseException:
            self._closed(origin)
            raise
        # Only the connection that won holds the place (a losing happy-eyeballs
        # attempt may still connect and close without ever counting).
        if connection.closed:
            self._closed(origin)
        else:
            connection.on_closed = self._closed
        return connection

    async def _wait_for_room(
        self, origin: Origin, state: OriginPool, deadline: float
    ) -> Connection | None:
        """Wait in line for a freed connection, or for room to dial (None)."""
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(waiter)
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self._give_back(origin, waiter.result())  # handed over just as we gave up
            else:
                waiter.cancel()
            if isinstance(error, TimeoutError):
                raise PoolTimeout(
                    "no free connection to the backend in time (BACKEND_MAX_CONNECTIONS)"
                ) from None
            raise
        finally:
            state.leave(waiter)  # (the line itself stays: others may be in it)

    def _give_back(self, origin: Origin, handed: Connection | None) -> None:
        if handed is None:
            self._closed(origin)  # the place it held for us
        else:
            self.put(handed)

    def _closed(self, origin: Origin) -> None:
        """A connection of `origin` closed (or never came to be): its place goes to the
        longest waiter, or is freed."""
        state = self.origins.get(origin)
        if state is None:
            return
        waiter = state.next_waiter()
        if waiter is not None:
            waiter.set_result(None)  # the place passes on, still counted
            return
        state.open -= 1
        self._forget_if_unused(origin, state)

    def _take(self, state: OriginPool) -> Connection | None:
        now = asyncio.get_running_loop().time()
        while state.idle:
            connection = state.idle.pop()
            if not connection.closed and now < connection.idle_until:
                return connection
            connection.abort()
        return None

    def put(self, connection: Connection) -> None:
        """An exchange ended and the connection may carry another."""
        keep = keepalive_for(connection.keep_alive_header, self.keepalive_seconds)
        state = self.origins.get(connection.origin)
        if keep <= 0 or state is None:
            connection.abort()
            return
        connection.fresh = False
        connection.idle_until = connection.loop.time() + keep
        waiter = state.next_waiter()
        if waiter is not None:
            waiter.set_result(connection)
            return
        state.idle.append(connection)
        if self.sweeping is None:
            self.sweeping = connection.loop.call_later(self.keepalive_seconds, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past their keep-alive time."""
        self.sweeping = None
        now = asyncio.get_running_loop().time()
        for origin, state in list(self.origins.items()):
            kept = []
            for connection in state.idle:
                if not connection.closed and now < connection.idle_until:
                    kept.append(connection)
                else:
                    connection.abort()
            state.idle = kept
            self._forget_if_unused(origin, state)
        if any(state.idle for state in self.origins.values()):
            self.sweeping = asyncio.get_running_loop().call_later(
                self.keepalive_seconds / 2, self._sweep
            )

    def close(self) -> None:
        if self.sweeping is not None:
            self.sweeping.cancel()
            self.sweeping = None
        for state in self.origins.values():
            for connection in state.idle:
                connection.abort()
            state.idle.clear()


def probe_transport(
    settings: Settings, resolver: Resolver, *, exempt_configured: bool = True
) -> UpstreamPool:
    """The transport for probes: the whole probe may take HEALTH_CHECK_TIMEOUT_SECONDS,
    connecting included; at most BACKEND_MAX_CONNECTIONS to a backend, as the proxy.
    `exempt_configured`: the configured servers' addresses pass the guard (a probe of
    them); false for anything else sent the same way (notifications)."""
    return UpstreamPool(
        verify_tls=settings.verify_backend_tls,
        connect_timeout=settings.health_check_timeout_seconds,
        resolver=resolver,
        allow_private=settings.allow_private_backends,
        max_connections=settings.backend_max_connections,
        exempt=settings.configured_endpoints if exempt_configured else frozenset(),
    )
