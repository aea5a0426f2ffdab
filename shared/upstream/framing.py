"""Where a backend lives, and one request framed as HTTP/1.1 bytes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from shared.failures import FailureKind
from shared.upstream.errors import ConnectFailed, UpstreamError


@dataclass(frozen=True)
class Origin:
    """Where a backend lives, parsed once per base URL."""

    host: str
    port: int
    tls: bool
    prefix: str  # path the registered URL carries, without a trailing slash
    host_header: str  # ASCII (IDNA)


@lru_cache(maxsize=4096)
def parse_origin(base_url: str) -> Origin:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectFailed(FailureKind.UNREACHABLE, "the backend URL is not http(s)")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default_port = parts.port is None or parts.port == (443 if tls else 80)
    host_header = shown if default_port else f"{shown}:{port}"
    return Origin(host, port, tls, parts.path.rstrip("/"), host_header.encode("idna").decode())


# What would end a header line or the request line early: never sent.
_UNSAFE_IN_HEADERS = re.compile(r"[\r\n\0]")
_UNSAFE_IN_TARGET = re.compile(r"[\r\n\0 ]")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


def encode_request(
    origin: Origin, path: str, headers: Mapping[str, str], body: bytes, method: str = "POST"
) -> bytes:
    """One request, its body framed with Content-Length (the body is in hand: no chunking).

    A GET or HEAD without a body carries no Content-Length."""
    if method not in _METHODS:
        raise UpstreamError(FailureKind.UNSENDABLE, f"the method {method!r} is not supported")
    target = origin.prefix + path
    if _UNSAFE_IN_TARGET.search(target):
        raise UpstreamError(
            FailureKind.UNSENDABLE, "the request path contains a space or a line break"
        )
    lines = "".join([f"\r\n{name}: {value}" for name, value in headers.items()])
    if _UNSAFE_IN_HEADERS.search("".join([*headers, *headers.values()])):
        raise UpstreamError(FailureKind.UNSENDABLE, "a request header contains a line break")
    head = f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}{lines}\r\n"
    try:
        encoded = head.encode("latin-1")
    except UnicodeEncodeError:
        raise UpstreamError(
            FailureKind.UNSENDABLE, "a request header is not Latin-1 text"
        ) from None
    if not body and method in ("GET", "HEAD"):
        return encoded + b"\r\n"
    return b"%sContent-Length: %d\r\n\r\n%s" % (encoded, len(body), body)
