"""The client itself (see the package's docstring); it imports no module of the server."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, cast

import httpx
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam


class ConnectionMode(enum.Enum):
    DIRECT = "direct"
    DISCOVERY = "discovery"


class DiscoveryError(Exception):
    """The API server could not name a replica for the capability."""


class Client:
    def __init__(
        self,
        endpoint: str | None = None,
        api_server: str | None = None,
        capability: dict[str, Any] | None = None,
        lazy_connect: bool = True,
        api_key: str | None = None,
    ) -> None:
        if (endpoint is None) == (api_server is None):
            raise ValueError("give endpoint (direct mode) or api_server (discovery mode)")
        if api_server is not None and not (capability or {}).get("model"):
            raise ValueError('discovery mode needs a capability with a "model"')
        self.mode = ConnectionMode.DIRECT if endpoint else ConnectionMode.DISCOVERY
        self.api_server = api_server.rstrip("/") if api_server else None
        self.capability = dict(capability or {})
        self.api_key = api_key or "unused"
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._model: str | None = self.capability.get("model")
        self.replica_id: str | None = None
        self._openai: openai.OpenAI | None = None
        if not lazy_connect:
            self._connect()

    @property
    def endpoint(self) -> str | None:
        """The URL requests go to (in discovery mode, the replica found; None before)."""
        return self._endpoint

    def _discover(self) -> None:
        assert self.api_server is not None
        params = {"model": self.capability["model"]}
        if self.capability.get("tags"):
            params["tags"] = ",".join(self.capability["tags"])
        try:
            response = httpx.get(
                f"{self.api_server}/route",
                params=params,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=10,
            )
        except httpx.HTTPError as error:
            raise DiscoveryError(f"cannot reach the API server: {error}") from error
        if response.status_code != 200:
            raise DiscoveryError(f"no replica: {response.text[:200]}")
        found = response.json()
        self._endpoint = found["endpoint"].rstrip("/")
        self.replica_id = found["replica_id"]
        self._model = found["model"]
        self._openai = None

    def _connect(self) -> openai.OpenAI:
        if self.mode is ConnectionMode.DISCOVERY and self._endpoint is None:
            self._discover()
        if self._openai is None:
            self._openai = openai.OpenAI(
                base_url=f"{self._endpoint}/v1", api_key=self.api_key, max_retries=0
            )
        return self._openai

    @property
    def openai(self) -> openai.OpenAI:
        """An `openai.OpenAI` for the current endpoint."""
        return self._connect()

    def chat(
        self,
        messages: Iterable[ChatCompletionMessageParam],
        model: str | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """A chat completion; in discovery mode a connection failure re-discovers once
        and retries on the new replica."""
        try:
            return self._create(list(messages), model, params)
        except openai.APIConnectionError:
            if self.mode is not ConnectionMode.DISCOVERY:
                raise
            self._discover()
            return self._create(list(messages), model, params)

    def _create(
        self,
        messages: list[ChatCompletionMessageParam],
        model: str | None,
        params: dict[str, Any],
    ) -> ChatCompletion:
        chosen = model or self._model
        if chosen is None:
            raise ValueError("give a model (direct mode has no capability to take it from)")
        answer = self._connect().chat.completions.create(
            model=chosen, messages=messages, stream=False, **params
        )
        return cast(ChatCompletion, answer)

    def close(self) -> None:
        if self._openai is not None:
            self._openai.close()
            self._openai = None
