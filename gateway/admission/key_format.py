"""What a client key looks like, and what of it is kept.

A key is `mvk_` and 32 random URL-safe characters (192 bits). The database keeps
its SHA-256 (a fast hash is right for a random secret of this size: there is
nothing to guess, so nothing to slow down) and its first 8 characters, the
visible prefix (`mvk_ab12`), by which a person recognises a key in lists and
logs. Nothing else of a key is ever stored or shown after it is issued.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mvk_"
VISIBLE_CHARACTERS = 8  # "mvk_" and 4 random characters


def new_key() -> str:
    """A fresh client key."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    """What the database keeps of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def visible_prefix(key: str) -> str:
    """The part of a key that may be shown: `mvk_ab12`."""
    return key[:VISIBLE_CHARACTERS]
