"""The old import path of the Python client: `from gateway.client import Client` keeps
working. The client lives in `clients/python/` (`multiverse_gateway_client`), a package
of its own that installs without the server (see the README's "Discovery and the
Python client")."""

from multiverse_gateway_client import Client, ConnectionMode, DiscoveryError

__all__ = ["Client", "ConnectionMode", "DiscoveryError"]
