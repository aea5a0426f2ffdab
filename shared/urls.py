"""Backend URL checks: syntax first (pure), then where the host really points.

The address guard runs *after* name resolution, so `localhost`, a name that
resolves to 10.0.0.5, and odd spellings of an address (`2130706433`,
`0x7f000001`, `127.1`, `[::ffff:127.0.0.1]`) are all judged by the address
they reach. Resolution is passed in, so tests simulate DNS without using it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
Endpoint = tuple[str, int]  # (host, port) as dialled: lower-case host, brackets removed

MAX_URL_LENGTH = 2048

# Cloud instance-metadata services (AWS/GCP/Azure/OpenStack, AWS ECS, Alibaba,
# Oracle, AWS over IPv6): named specially because they hand out credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    )
)
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)


class BadBackendURL(ValueError):
    """The URL is malformed, or points somewhere the gateway must not go."""


class UnresolvableHost(Exception):
    """The host name does not resolve (a DNS failure, not a policy decision)."""


def normalize_backend_url(raw: str) -> str:
    """Check the syntax of a backend base URL and return it in canonical form.

    The base URL is where `/v1/...` is appended, so a trailing `/` or `/v1`
    that owners often paste is removed.
    """
    text = raw.strip()
    if not text:
        raise BadBackendURL("endpoint_url must not be empty")
    if len(text) > MAX_URL_LENGTH:
        raise BadBackendURL(f"endpoint_url must be at most {MAX_URL_LENGTH} characters")
    if any(ord(character) < 33 for character in text):
        raise BadBackendURL("endpoint_url must not contain spaces or control characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadBackendURL("endpoint_url must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise BadBackendURL("endpoint_url must not contain credentials; use api_key instead")
    if not parts.hostname:
        raise BadBackendURL("endpoint_url must name a host")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise BadBackendURL("endpoint_url must not have a query string or fragment")
    try:
        port = parts.port
    except ValueError:
        raise BadBackendURL("endpoint_url has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}"


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host spells directly, in any form the C library accepts.

    `inet_aton` parses decimal, hex, octal and shortened IPv4 forms without any
    network access; those are the spellings that slip past naive checks.
    """
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> IPAddress | None:
    """The IPv4 address hidden in an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why the gateway must not connect to `address`, or None if it is public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_problem(embedded)
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_multicast:
        return "multicast address"
    if address.is_reserved:
        return "reserved address"
    if address.is_private:
        return "private address"
    if not address.is_global:
        return "non-public address"
    return None


def first_problem(addresses: Iterable[IPAddress]) -> tuple[IPAddress, str] | None:
    """The first address that is not allowed, with the reason."""
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            return address, problem
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve through the operating system, as the HTTP client will."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_host(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """Every address `host` stands for; a literal is not looked up."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        answers = await resolver(host, port)
    except (OSError, UnicodeError) as error:
        raise UnresolvableHost(f"the host name {host!r} could not be resolved") from error
    addresses = []
    for answer in answers:
        parsed = parse_ip_literal(answer)
        if parsed is not None:
            addresses.append(parsed)
    if not addresses:
        raise UnresolvableHost(f"the host name {host!r} did not resolve to any address")
    return addresses


def endpoint_of(url: str) -> Endpoint | None:
    """The host and port a URL is dialled at (None if it has no host or a bad port)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def endpoints_of(urls: Iterable[str]) -> frozenset[Endpoint]:
    """The endpoints of several URLs (those without one left out)."""
    return frozenset(found for found in map(endpoint_of, urls) if found is not None)


async def check_backend_url(
    url: str, *, allow_private: bool, resolver: Resolver, field: str = "endpoint_url"
) -> None:
    """Refuse a URL (`field` of a request) whose host resolves to a non-public address."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = first_problem(await resolve_host(host, port, resolver))
    if found is not None:
        address, problem = found
        raise BadBackendURL(
            f"{field} points to a {problem} ({address}); the address guard allows only "
            "public addresses (an operator can set ALLOW_PRIVATE_BACKENDS=true)"
        )


def url_password(url: str | None) -> str | None:
    """The password in a database or Redis URL, if it has one."""
    if not url:
        return None
    return urlsplit(url).password or None


def without_password(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, to show or log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
