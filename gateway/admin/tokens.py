"""Management tokens: what lets a server's host manage that registration and no other.

A token is shown once, when the registration is made; only its SHA-256 is
stored, so a copy of the database manages nothing. Tokens are long random
strings, so a plain hash (no salt, no slow KDF) is enough: there is nothing to
guess from it.
"""

from __future__ import annotations

import enum
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


class Revoker(enum.StrEnum):
    """Who deregistered a registration: either way its token is revoked for good, so a
    host's agent cannot bring back what was taken out (#19 item 5)."""

    ADMIN = "admin"
    OWNER = "owner"


# A revoked token's stored hash keeps all but its first two characters behind a mark
# no SHA-256 hex digest has: it matches no token any more, yet still tells the token's
# holder that it was revoked, and by whom (in the same column, no schema change).
_REVOKED_MARKS = {Revoker.ADMIN: "!a", Revoker.OWNER: "!o"}


def revoked_hash(stored_hash: str, by: Revoker) -> str:
    mark = _REVOKED_MARKS[by]
    return mark + stored_hash[len(mark) :]


def stored_forms(token: str) -> dict[str, Revoker | None]:
    """Each value the token's column may hold: its live hash (None), or its hash as
    revoked by each revoker."""
    live = token_hash(token)
    return {live: None, **{revoked_hash(live, by): by for by in Revoker}}
