"""The backend URL checks as tables: syntax, and the address guard after resolution.

No test here sends a packet: names are resolved by fake resolvers.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from shared.urls import (
    BadBackendURL,
    UnresolvableHost,
    address_problem,
    check_backend_url,
    endpoint_of,
    normalize_backend_url,
    parse_ip_literal,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://abc123.ngrok.io", "https://abc123.ngrok.io"),
        ("https://abc123.ngrok.io/", "https://abc123.ngrok.io"),
        ("https://abc123.ngrok.io/v1", "https://abc123.ngrok.io"),
        ("https://abc123.ngrok.io/v1/", "https://abc123.ngrok.io"),
        ("HTTP://Example.COM:8080/prefix/", "http://example.com:8080/prefix"),
        ("  http://example.com  ", "http://example.com"),
        ("http://[2001:db8::1]:8000", "http://[2001:db8::1]:8000"),
    ],
)
def test_urls_are_normalized(raw: str, expected: str) -> None:
    assert normalize_backend_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("example.com", "http:// or https://"),
        ("ftp://example.com", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("http://user:secret@example.com", "credentials"),
        ("http://", "host"),
        ("http://example.com/?a=1", "query"),
        ("http://example.com/#top", "fragment"),
        ("http://example.com:99999", "port"),
        ("http://exa mple.com", "spaces"),
        ("http://example.com/" + "a" * 2100, "2048"),
    ],
)
def test_bad_urls_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(BadBackendURL, match=reason):
        normalize_backend_url(raw)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_ip_literals_in_any_spelling(host: str, address: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 around 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_guard(address: str, problem: str | None) -> None:
    found = address_problem(ipaddress.ip_address(address))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def resolver_returning(*answers: str):  # type: ignore[no-untyped-def]
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return list(answers)

    resolve.looked_up = looked_up  # type: ignore[attr-defined]
    return resolve


async def failing_resolver(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize(
    ("url", "answers", "problem"),
    [
        ("http://127.0.0.1:8000", (), "loopback"),
        ("http://10.0.0.1", (), "private"),
        ("http://169.254.169.254/latest", (), "cloud metadata"),
        ("http://[::1]:8000", (), "loopback"),
        ("http://2130706433:8000", (), "loopback"),
        ("http://0x7f000001:8000", (), "loopback"),
        ("http://sneaky.example", ("127.0.0.1",), "loopback"),
        ("http://internal.example", ("10.1.1.1",), "private"),
        ("http://mixed.example", ("93.184.216.34", "10.0.0.7"), "private"),
        ("https://public.example", ("93.184.216.34",), None),
        ("https://v6.example", ("2606:4700:4700::1111",), None),
    ],
)
async def test_check_backend_url_judges_the_resolved_address(
    url: str, answers: tuple[str, ...], problem: str | None
) -> None:
    resolver = resolver_returning(*answers)
    if problem is None:
        await check_backend_url(url, allow_private=False, resolver=resolver)
    else:
        with pytest.raises(BadBackendURL, match=problem):
            await check_backend_url(url, allow_private=False, resolver=resolver)
    literal = parse_ip_literal(url.split("//")[1].split("/")[0].rsplit(":", 1)[0])
    if literal is not None:
        assert resolver.looked_up == []  # a literal is never looked up


async def test_allow_private_skips_the_guard() -> None:
    resolver = resolver_returning("127.0.0.1")
    await check_backend_url("http://anything.example", allow_private=True, resolver=resolver)
    assert resolver.looked_up == []


async def test_dns_failure_is_not_a_policy_error() -> None:
    with pytest.raises(UnresolvableHost, match="could not be resolved"):
        await check_backend_url("http://nx.example", allow_private=False, resolver=failing_resolver)


async def test_empty_answer_is_unresolvable() -> None:
    with pytest.raises(UnresolvableHost):
        await check_backend_url(
            "http://empty.example", allow_private=False, resolver=resolver_returning()
        )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("http://Upstream.Test", ("upstream.test", 80)),
        ("https://upstream.test/v1", ("upstream.test", 443)),
        (" http://[::1]:9000/ ", ("::1", 9000)),
        ("http://upstream.test:99999", None),
        ("not a url", None),
    ],
)
def test_the_endpoint_a_url_is_dialled_at(url: str, expected: tuple[str, int] | None) -> None:
    """The key of the guard's exemption: host and port as the dialer sees them (#19 item 6)."""
    assert endpoint_of(url) == expected
