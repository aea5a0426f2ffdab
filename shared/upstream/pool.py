"""Connections to backends: made with the address checked and pinned, kept alive, swept.

A connection is made to an address resolved here and checked like the
registration was (unless ALLOW_PRIVATE_BACKENDS): a name that re-resolves
to a private address later (DNS rebinding) is refused, not connected to. TLS
still verifies the certificate against the name. Answers are cached for
DNS_CACHE_SECONDS, so a burst of new connections costs one look-up.
"""

from __future__ import annotations

import asyncio
import ssl

from shared.failures import FailureKind
from shared.settings import Settings
from shared.upstream.connection import Connection, UpstreamResponse
from shared.upstream.errors import ConnectFailed, Disconnected
from shared.upstream.framing import Origin, encode_request, parse_origin
from shared.upstream.transport import UpstreamRequest
from shared.urls import IPAddress, Resolver, UnresolvableHost, first_problem, resolve_host

DNS_CACHE_SECONDS = 10.0


class UpstreamPool:
    """Keep-alive connections per origin, most recently used first (a `Transport`)."""

    def __init__(
        self,
        *,
        verify_tls: bool,
        connect_timeout: float,
        resolver: Resolver,
        allow_private: bool,
        keepalive_seconds: float = 4.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.resolver = resolver
        self.allow_private = allow_private
        self.addresses: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}
        # Shorter than the usual server keep-alive (uvicorn 5 s), so a pooled
        # connection is rarely one the backend is closing.
        self.keepalive_seconds = keepalive_seconds
        self.ssl_context = ssl.create_default_context()
        if not verify_tls:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        self.idle: dict[Origin, list[Connection]] = {}
        self.sweeping: asyncio.TimerHandle | None = None

    async def send(self, request: UpstreamRequest, deadline: float) -> UpstreamResponse:
        """Send the request and wait for the answer's status and headers."""
        origin = parse_origin(request.base_url)
        data = encode_request(origin, request.path, request.headers, request.body, request.method)
        head = request.method == "HEAD"
        connection = self._take(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, data, deadline, head)
            except Disconnected as error:
                # A pooled connection found closed before the request was written:
                # the backend cannot have seen it, so it goes out again on a new
                # connection. Anything else may have reached the backend (which may be
                # generating): the attempt failed, and only the caller may try again.
                if not error.unsent:
                    raise
        connection = await self._connect(origin, deadline)
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

    async def _addresses(self, origin: Origin) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        key = (origin.host, origin.port)
        cached = self.addresses.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            addresses = await resolve_host(origin.host, origin.port, self.resolver)
        except UnresolvableHost:
            raise ConnectFailed(
                FailureKind.DNS, "the backend's host name could not be resolved"
            ) from None
        if not self.allow_private:
            found = first_problem(addresses)
            if found is not None:
                raise ConnectFailed(
                    FailureKind.ADDRESS_REFUSED,
                    f"the backend's host name now points to a {found[1]}",
                )
        self.addresses[key] = (loop.time() + DNS_CACHE_SECONDS, addresses)
        return addresses

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        timeout = min(self.connect_timeout, max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(origin)
                return await self._connect_to_one(loop, origin, addresses, timeout)
        except TimeoutError:
            raise ConnectFailed(FailureKind.CONNECT_TIMEOUT, "timed out connecting") from None

    async def _connect_to_one(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        addresses: list[IPAddress],
        timeout: float,
    ) -> Connection:
        """The first address that takes the connection (the pool's DNS answer, pinned)."""
        failure = ConnectFailed(FailureKind.UNREACHABLE, "could not connect")
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, origin, self.put),
                    str(address),
                    origin.port,
                    ssl=self.ssl_context if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                    ssl_handshake_timeout=timeout if origin.tls else None,
                )
                return connection
            except ssl.SSLError:
                failure = ConnectFailed(FailureKind.TLS, "TLS error")
            except ConnectionRefusedError:
                failure = ConnectFailed(FailureKind.REFUSED, "connection refused")
            except OSError:
                failure = ConnectFailed(FailureKind.UNREACHABLE, "could not connect")
        raise failure

    def _take(self, origin: Origin) -> Connection | None:
        stack = self.idle.get(origin)
        now = asyncio.get_running_loop().time()
        while stack:
            connection = stack.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_seconds:
                return connection
            connection.abort()
        return None

    def put(self, connection: Connection) -> None:
        connection.idle_since = connection.loop.time()
        self.idle.setdefault(connection.origin, []).append(connection)
        if self.sweeping is None:
            self.sweeping = connection.loop.call_later(self.keepalive_seconds, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive time (the oldest sit at the bottom)."""
        self.sweeping = None
        now = asyncio.get_running_loop().time()
        for origin, stack in list(self.idle.items()):
            keep = []
            for connection in stack:
                if not connection.closed and now - connection.idle_since < self.keepalive_seconds:
                    keep.append(connection)
                else:
                    connection.abort()
            if keep:
                self.idle[origin] = keep
            else:
                del self.idle[origin]
        if self.idle:
            self.sweeping = asyncio.get_running_loop().call_later(
                self.keepalive_seconds / 2, self._sweep
            )

    def close(self) -> None:
        if self.sweeping is not None:
            self.sweeping.cancel()
            self.sweeping = None
        for stack in self.idle.values():
            for connection in stack:
                connection.abort()
        self.idle.clear()


def probe_transport(settings: Settings, resolver: Resolver) -> UpstreamPool:
    """The transport for probes: the whole probe may take HEALTH_CHECK_TIMEOUT_SECONDS,
    connecting included."""
    return UpstreamPool(
        verify_tls=settings.verify_backend_tls,
        connect_timeout=settings.health_check_timeout_seconds,
        resolver=resolver,
        allow_private=settings.allow_private_backends,
    )
