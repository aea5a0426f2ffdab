"""A Python client for the Multiverse Inference Gateway, in direct or discovery mode.

    from multiverse_gateway_client import Client

    direct = Client(endpoint="http://gateway:8000")          # everything through the gateway
    found = Client(api_server="http://gateway:8000",          # ask /route for a replica,
                   capability={"model": "llama3", "tags": ["gpu"]})  # then call it directly
    answer = found.chat([{"role": "user", "content": "hi"}])   # an openai ChatCompletion

In discovery mode a connection failure re-discovers once and retries on the
new replica. Installed on its own (`pip install ./clients/python`): it needs
only the `openai` SDK and httpx, never the gateway's server packages.
"""

from multiverse_gateway_client.client import Client, ConnectionMode, DiscoveryError

__all__ = ["Client", "ConnectionMode", "DiscoveryError"]
