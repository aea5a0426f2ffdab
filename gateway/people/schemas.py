"""Pydantic models of the keys and groups admin API: they validate requests and describe
them in /openapi.json. Limits are checked by gateway/admission/limits.py (they depend on
TOKEN_RESERVATION_DEFAULT), so here they are only an object."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.admin.schemas import ModelName

# Printable text without control characters: names and owners show in tables and logs.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
# A group's name travels in a URL path (PUT /admin/groups/{name}): kept URL-safe.
GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

KeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE)
]
Owner = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE),
    Field(description="Who the key is for: a student_id, as servers' owners are named."),
]
GroupName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=GROUP_PATTERN),
    Field(description="A class's namespace: letters, digits, `_`, `.`, `-`; up to 100."),
]
ModelList = Annotated[
    list[ModelName],
    Field(
        min_length=1,
        max_length=1000,
        description="The models this key may use (within its group's); null: the group's, "
        "or every model.",
    ),
]
LimitsObject = Annotated[
    dict[str, Any],
    Field(
        description="Any of requests_per_minute, tokens_per_minute, tokens_per_day, "
        "max_concurrent (whole numbers, 0 = no limit) and priority (1 to 100); an absent "
        "one is the group's, then the gateway's default.",
        examples=[{"requests_per_minute": 30, "tokens_per_day": 200000}],
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Strict):
    """A new client key. The key itself is in the 201 answer only."""

    name: KeyName = Field(description="What the key is for, e.g. `laptop` or `lab 3`.")
    owner: Owner
    group: GroupName | None = Field(None, description="An existing group (PUT /admin/groups).")
    limits: LimitsObject | None = None
    models: ModelList | None = None
    expires_at: datetime | None = Field(
        None, description="Refused after this (ISO 8601; UTC when no offset is given)."
    )


class KeyBatch(_Strict):
    """Keys created together, all or none (a class's roster)."""

    keys: list[KeyCreate] = Field(min_length=1, max_length=5000)


class KeyUpdate(_Strict):
    """Fields to change; absent ones keep their value. `limits` are merged into the key's
    own (a limit set to null goes back to the group's or the default; `limits: null`
    clears them all); `group`, `models` and `expires_at` set to null clear them."""

    name: KeyName | None = None
    group: GroupName | None = None
    limits: LimitsObject | None = None
    models: ModelList | None = None
    expires_at: datetime | None = None


class KeyUsage(BaseModel):
    """What the key was served since 00:00 UTC today (all workers, up to a flush behind)."""

    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


KeyStatus = Literal["active", "expired", "revoked"]


class KeyOut(BaseModel):
    """A key as the API shows it: never the key, only its visible prefix."""

    id: str
    name: str
    owner: str
    group: str | None
    prefix: str = Field(description="The key's first characters, to recognise it by.")
    status: KeyStatus
    limits: dict[str, int] = Field(description="The key's own limits.")
    effective_limits: dict[str, int] = Field(
        description="What applies: the key's, else its group's, else the default (0: none)."
    )
    models: list[str] | None = Field(description="The key's own list (null: not set).")
    allowed_models: list[str] | None = Field(
        description="What the key may use with its group's list applied (null: every model)."
    )
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    usage_today: KeyUsage = Field(default_factory=KeyUsage)


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown in this answer only, never again.")


class KeyBatchCreated(BaseModel):
    keys: list[KeyCreated]


class GroupSet(_Strict):
    """A group's default limits and models (PUT replaces both)."""

    limits: LimitsObject | None = None
    models: ModelList | None = None


class GroupOut(BaseModel):
    name: str
    limits: dict[str, int]
    models: list[str] | None = Field(description="null: every model.")
    created_at: datetime
    keys: int = Field(description="Its keys that are not revoked.")


class GroupDeleted(BaseModel):
    name: str
    status: Literal["deleted"] = "deleted"
