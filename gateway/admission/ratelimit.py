"""Who an anonymous client is, for its rate limit: its address.

An IPv6 client is counted by its /64, the block one host is given (a host
rotating through its block is one client). Its counters live in the shared
table's address half (gateway/admission/shared_counters.py), apart from keys',
so a client spraying addresses cannot push the keys' counts out.
"""

from __future__ import annotations

import ipaddress


def client_of(host: str) -> str:
    """The rate limit's key for a client address: an IPv6 address by its /64."""
    if ":" not in host:
        return f"ip:{host}"
    try:
        network = ipaddress.IPv6Network(f"{host}/64", strict=False)
    except ValueError:
        return f"ip:{host}"
    return f"ip:{network}"
