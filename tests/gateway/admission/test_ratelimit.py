"""An anonymous client's rate limit: by address, in a table of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.admission.access import client_of
from gateway.admission.limits import Limits
from gateway.admission.shared_counters import SLOTS, SharedCounters


def test_many_new_addresses_push_out_only_the_least_recently_seen(tmp_path: Path) -> None:
    """Rotating addresses past the table's size must not give everyone a fresh bucket,
    nor touch the keys' counts."""
    clock = [0.0]
    store = SharedCounters(tmp_path, clock=lambda: clock[0])
    try:
        one = Limits(requests_per_minute=1)
        assert store.admit_now("ip:busy", one, 0).refusal is None
        assert store.admit_now("key:k", one, 0).refusal is None
        for n in range(SLOTS + 300):  # "busy" stays limited as long as it is seen
            clock[0] += 0.0001
            store.admit_now(f"ip:rotating-{n}", one, 0)
            if n % 100 == 0:
                assert store.admit_now("ip:busy", one, 0).refusal is not None
        assert store.admit_now("ip:busy", one, 0).refusal is not None
        assert store.admit_now("key:k", one, 0).refusal is not None  # another table
    finally:
        store.close()


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "ip:192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("unknown", "ip:unknown"),
        ("not:an:address", "ip:not:an:address"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64(host: str, key: str) -> None:
    assert client_of(host) == key
