"""A Python client for the gateway, in direct or discovery mode (the seed's client).

    from gateway.client import Client

    direct = Client(endpoint="http://gateway:8000")          # everything through the gateway
    found = Client(api_server="http://gateway:8000",          # ask /route for a replica,
                   capability={"model": "llama3", "tags": ["gpu"]})  # then call it directly
    answer = found.chat([{"role": "user", "content": "hi"}])   # an openai ChatCompletion

In discovery mode a connection failure re-discovers once and retries on the
new replica. Needs the `openai` package (`pip install 'multiverse-gateway[client]'`).
"""

from gateway.client.client import Client, ConnectionMode, DiscoveryError

__all__ = ["Client", "ConnectionMode", "DiscoveryError"]
