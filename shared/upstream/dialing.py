"""Dialing a backend: resolve its name, check the answer, connect to the address checked.

A connection is made to an address resolved here and checked like the
registration was (unless ALLOW_PRIVATE_BACKENDS, or the origin is one of the
`exempt` ones: the servers the operator configured): a name that re-resolves to
a forbidden address later (DNS rebinding), or whose answers include one, is
refused, not connected to. TLS still verifies the certificate against the
name. Answers are cached for DNS_CACHE_SECONDS, and one look-up per name is
in flight at a time, however many connections wait for it. A name with
several addresses is dialled the way RFC 8305 says (as asyncio's
`happy_eyeballs_delay` does): families interleaved, the next attempt started
HAPPY_EYEBALLS_DELAY after the previous one unless it already succeeded.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import staggered
from collections.abc import Awaitable, Callable

from shared.failures import FailureKind
from shared.single_flight import SingleFlight
from shared.upstream.connection import Connection
from shared.upstream.errors import ConnectFailed
from shared.upstream.framing import Origin
from shared.urls import (
    Endpoint,
    IPAddress,
    Resolver,
    UnresolvableHost,
    first_problem,
    resolve_host,
)

DNS_CACHE_SECONDS = 10.0
HAPPY_EYEBALLS_DELAY = 0.25

ConnectionFactory = Callable[[], Connection]


def interleave_families(addresses: list[IPAddress]) -> list[IPAddress]:
    """RFC 8305 section 4: the first answer's family first, then alternating."""
    if not addresses:
        return []
    first_family = addresses[0].version
    same = [a for a in addresses if a.version == first_family]
    other = [a for a in addresses if a.version != first_family]
    ordered: list[IPAddress] = []
    for index in range(max(len(same), len(other))):
        ordered += same[index : index + 1] + other[index : index + 1]
    return ordered


def connect_failure(error: BaseException) -> ConnectFailed:
    """The typed failure for what connecting raised."""
    if isinstance(error, ConnectFailed):
        return error
    if isinstance(error, ssl.SSLError):
        return ConnectFailed(FailureKind.TLS, "TLS error")
    if isinstance(error, ConnectionRefusedError):
        return ConnectFailed(FailureKind.REFUSED, "connection refused")
    return ConnectFailed(FailureKind.UNREACHABLE, "could not connect")


_PREFERENCE = (FailureKind.TLS, FailureKind.REFUSED, FailureKind.UNREACHABLE)


def _rank(kind: FailureKind) -> int:
    """Of several addresses' failures, the one that says most about the backend first."""
    return _PREFERENCE.index(kind) if kind in _PREFERENCE else len(_PREFERENCE)


class Dialer:
    def __init__(
        self,
        *,
        resolver: Resolver,
        allow_private: bool,
        ssl_context: ssl.SSLContext,
        connect_timeout: float,
        exempt: frozenset[Endpoint] = frozenset(),
    ) -> None:
        self.resolver = resolver
        self.allow_private = allow_private
        self.exempt = exempt
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.cache: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}
        self.resolving: SingleFlight[tuple[str, int], list[IPAddress]] = SingleFlight()

    async def addresses(self, origin: Origin) -> list[IPAddress]:
        """The checked addresses of the origin's host (cached; one look-up in flight)."""
        loop = asyncio.get_running_loop()
        key = (origin.host, origin.port)
        cached = self.cache.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        return await self.resolving.run(key, lambda: self._look_up(origin))

    async def _look_up(self, origin: Origin) -> list[IPAddress]:
        try:
            addresses = await resolve_host(origin.host, origin.port, self.resolver)
        except UnresolvableHost:
            raise ConnectFailed(
                FailureKind.DNS, "the backend's host name could not be resolved"
            ) from None
        if not self.allow_private and (origin.host, origin.port) not in self.exempt:
            found = first_problem(addresses)
            if found is not None:
                raise ConnectFailed(
                    FailureKind.ADDRESS_REFUSED,
                    f"the backend's host name now points to a {found[1]}",
                )
        loop = asyncio.get_running_loop()
        self.cache[(origin.host, origin.port)] = (loop.time() + DNS_CACHE_SECONDS, addresses)
        return addresses

    async def dial(self, origin: Origin, deadline: float, factory: ConnectionFactory) -> Connection:
        """A new connection to the origin, within the connect timeout and `deadline`."""
        loop = asyncio.get_running_loop()
        timeout = min(self.connect_timeout, max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                addresses = interleave_families(await self.addresses(origin))
                return await self._race(origin, addresses, timeout, factory)
        except TimeoutError:
            raise ConnectFailed(FailureKind.CONNECT_TIMEOUT, "timed out connecting") from None

    async def _race(
        self,
        origin: Origin,
        addresses: list[IPAddress],
        timeout: float,
        factory: ConnectionFactory,
    ) -> Connection:
        attempts = [self._attempt(origin, address, timeout, factory) for address in addresses]
        if len(attempts) == 1:
            try:
                return await attempts[0]()
            except OSError as error:
                raise connect_failure(error) from None
        winner, _, errors = await staggered.staggered_race(attempts, HAPPY_EYEBALLS_DELAY)
        if winner is not None:
            return winner  # type: ignore[no-any-return]
        failures = [connect_failure(error) for error in errors if error is not None]
        failures.sort(key=lambda failure: _rank(failure.kind))
        raise failures[0] if failures else ConnectFailed(FailureKind.UNREACHABLE)

    def _attempt(
        self, origin: Origin, address: IPAddress, timeout: float, factory: ConnectionFactory
    ) -> Callable[[], Awaitable[Connection]]:
        async def connect() -> Connection:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(
                factory,
                str(address),
                origin.port,
                ssl=self.ssl_context if origin.tls else None,
                server_hostname=origin.host if origin.tls else None,
                ssl_handshake_timeout=timeout if origin.tls else None,
            )
            return connection

        return connect
