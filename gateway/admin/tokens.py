"""Management tokens: what lets a server's host manage that registration and no other.

A token is shown once, when the registration is made; only its SHA-256 is
stored, so a copy of the database manages nothing. Tokens are long random
strings, so a plain hash (no salt, no slow KDF) is enough: there is nothing to
guess from it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "mgt_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Constant-time: whether `token` is the one `stored_hash` was made from."""
    return stored_hash is not None and hmac.compare_digest(token_hash(token), stored_hash)
