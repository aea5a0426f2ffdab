"""Who may call /v1: optional client keys (Bearer) and a per-client rate limit."""

from __future__ import annotations

import hmac
import math

from gateway.admission.ratelimit import RateLimiter, client_of
from shared.errors import AuthenticationRequired, PermissionDenied, RateLimited
from shared.settings import Settings


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class ClientAccess:
    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        self.required = settings.require_client_auth
        self.keys = [key.get_secret_value().encode() for key in settings.client_api_keys]
        self.limiter = limiter

    def _known(self, token: str) -> bool:
        candidate = token.encode()
        # Compare with every key, always, so timing says nothing about which matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)

    def admit(self, authorization: str | None, client_host: str) -> None:
        """Raise the 401/403/429 the client should get, or return to let it through."""
        token = bearer_token(authorization)
        if self.required:
            if token is None:
                raise AuthenticationRequired(
                    "missing API key: send it as 'Authorization: Bearer <key>'"
                )
            if not self._known(token):
                raise PermissionDenied("invalid API key")
        if self.limiter.enabled:
            client = f"key:{token}" if self.required and token else client_of(client_host)
            wait = self.limiter.check(client)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                raise RateLimited(
                    f"rate limit of {self.limiter.per_minute} requests per minute exceeded; "
                    f"retry in {seconds}s",
                    headers={"Retry-After": str(seconds)},
                )
