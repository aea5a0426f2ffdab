"""Pydantic models of the admin API: they validate requests and describe them in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from shared.urls import BadBackendURL, normalize_backend_url

# Any printable text, as backends name models: `vllm serve /models/llama` calls its
# model "/models/llama", Ollama "llama3.1:8b-instruct-q4_K_M".
MODEL_NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,256}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"

ModelName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=MODEL_NAME_PATTERN),
    Field(
        description="Model name clients ask for: 1 to 256 printable characters.",
        examples=["llama-3.1-8b"],
    ),
]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=TAG_PATTERN)]
PositiveInt = Annotated[int, Field(gt=0, le=10_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Capabilities(_Strict):
    max_tokens: PositiveInt | None = None
    context_length: PositiveInt | None = None
    streaming: bool = True


class CapabilitiesUpdate(_Strict):
    max_tokens: PositiveInt | None = None
    context_length: PositiveInt | None = None
    streaming: bool | None = None


class OwnerMetadata(_Strict):
    student_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = (
        None
    )
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None


def _check_url(value: str) -> str:
    try:
        return normalize_backend_url(value)
    except BadBackendURL as error:
        raise ValueError(str(error)) from None


def _check_notify_url(value: str | None) -> str | None:
    """A webhook's URL as given (path and query kept): http(s), a host, no credentials.
    Where it points is checked when healthd sends (the same guard as a backend's)."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; sign with the management token instead")
    return value.strip()


NotifyURL = Annotated[
    str,
    Field(
        max_length=2048,
        description="healthd POSTs every health transition here, signed with the "
        "management token (see README, 'Notifications').",
    ),
]

NotifyFormat = Literal["json", "slack", "discord", "ntfy"]
NOTIFY_FORMAT_FIELD = Field(
    None,
    description="The shape of notify_url's POSTs: json (default), slack, discord (their "
    "webhooks' payloads) or ntfy (text with Title, Tags and Priority headers).",
)

EndpointURL = Annotated[
    str,
    Field(
        max_length=2048,
        description="Base URL of an OpenAI-compatible server; `/v1/...` is appended.",
        examples=["https://abc123.example.invalid"],
    ),
]


def _sendable_in_a_header(key: SecretStr) -> SecretStr:
    """A key that cannot travel in an Authorization header would fail every request."""
    value = key.get_secret_value()
    if not value or any(not ("\x21" <= character <= "\x7e") for character in value):
        # Never quote the key, nor the character: both may be secret.
        raise ValueError(
            "the key must be printable ASCII without spaces (it is sent as a Bearer token)"
        )
    return key


BackendKey = Annotated[
    SecretStr,
    Field(max_length=4096, description="Sent to the backend as a Bearer token; never shown."),
    AfterValidator(_sendable_in_a_header),
]


class RegisterRequest(_Strict):
    """A new backend. Only endpoint_url is required: without model_name the registration
    serves every model the backend lists, kept in sync by healthd."""

    model_name: ModelName | None = Field(
        None,
        description="Serve only this model (the backend must list it, or list "
        "`backend_model`). Absent: every model the backend lists.",
    )
    backend_model: ModelName | None = Field(
        None,
        description="What the backend calls `model_name`; `model` in each request is "
        "rewritten to it.",
    )
    endpoint_url: EndpointURL
    api_key: BackendKey | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    metadata: OwnerMetadata = Field(default_factory=OwnerMetadata)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    priority: int = Field(0, ge=0, le=1000, description="Tier: 0 is tried first.")
    weight: int = Field(1, ge=1, le=1000, description="Share under the weighted strategy.")
    max_concurrent: PositiveInt | None = Field(None, description="Cap on in-flight requests.")
    notify_url: NotifyURL | None = None
    notify_format: NotifyFormat | None = NOTIFY_FORMAT_FIELD
    claim: bool = Field(
        False,
        description="Own `model_name`: only this server and the co-hosts it allows serve "
        "it (refused if other servers serve the name now).",
    )

    _normalize_url = field_validator("endpoint_url")(_check_url)
    _notify_url = field_validator("notify_url")(_check_notify_url)

    @field_validator("claim")
    @classmethod
    def _claim_names_a_model(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("model_name") is None:
            raise ValueError("claim needs model_name: the name to own")
        return value

    @field_validator("backend_model")
    @classmethod
    def _backend_model_renames(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("model_name") is None:
            raise ValueError("backend_model needs model_name: the name clients use for it")
        return value


class UpdateRequest(_Strict):
    """Fields to change; absent fields keep their value, `null` clears an optional one
    (`model_name: null`: serve every model the backend lists)."""

    model_name: ModelName | None = None
    backend_model: ModelName | None = None
    endpoint_url: EndpointURL | None = None
    api_key: BackendKey | None = None
    capabilities: CapabilitiesUpdate | None = None
    metadata: OwnerMetadata | None = None
    tags: list[Tag] | None = Field(None, max_length=32)
    priority: int | None = Field(None, ge=0, le=1000)
    weight: int | None = Field(None, ge=1, le=1000)
    max_concurrent: PositiveInt | None = None
    notify_url: NotifyURL | None = None
    notify_format: NotifyFormat | None = NOTIFY_FORMAT_FIELD

    _notify_url = field_validator("notify_url")(_check_notify_url)

    @field_validator("endpoint_url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)


class ProbeRequest(_Strict):
    """A connection test: the same checks as a registration, nothing stored."""

    endpoint_url: EndpointURL
    api_key: BackendKey | None = None

    _normalize_url = field_validator("endpoint_url")(_check_url)


class ProbeResponse(BaseModel):
    healthy: Literal[True] = True
    response_time_ms: float
    reported_models: list[str]


HealthStatusName = Literal["healthy", "unhealthy", "unknown"]


class RegisterResponse(BaseModel):
    registration_id: str
    status: Literal["registered"] = "registered"
    health_status: HealthStatusName
    reported_models: list[str] = Field(
        default_factory=list, description="Model ids the backend itself lists."
    )
    served_models: list[str] = Field(
        default_factory=list, description="The model names clients can route to it."
    )
    management_token: str | None = Field(
        None,
        description="Shown this once: with header X-Management-Token it updates, drains, "
        "checks or deregisters this registration, and no other, without the admin key.",
    )


class DeregisterResponse(BaseModel):
    registration_id: str
    status: Literal["deregistered"] = "deregistered"


class CheckRequested(BaseModel):
    registration_id: str
    status: Literal["check requested"] = "check requested"


class HealthCheckOut(BaseModel):
    checked_at: datetime
    status: Literal["success", "failure"]
    response_time_ms: float | None
    http_status: int | None
    error_message: str | None


class Usage(BaseModel):
    """What the gateway served through this backend (flushed every few seconds)."""

    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    mean_latency_ms: float | None = None
    last_request_at: datetime | None = None


class WithheldModel(BaseModel):
    model: str
    reason: str


class ModelNames(BaseModel):
    """What a server's answers for one model named (gateway/accounting/mismatch.py)."""

    answers: int = Field(0, description="Answers that named a model.")
    mismatched: int = Field(0, description="Of which named another model than the one routed.")
    named: str | None = Field(None, description="The last other name an answer gave.")
    suspect: bool = Field(False, description="Out of routing for it until its canary passes.")


class ServerOut(BaseModel):
    """A registration as the API shows it: the backend's key is never included."""

    registration_id: str
    model_name: str | None = Field(description="null: serves every model the backend lists.")
    backend_model: str | None = Field(description="What the backend calls model_name.")
    served_models: list[str] = Field(description="The model names clients can route to it.")
    withheld_models: list[WithheldModel] = Field(
        default_factory=list,
        description="Models it offers but may not serve (a name another owner claimed), and why.",
    )
    owned_models: list[str] = Field(
        default_factory=list, description="The model names this registration owns."
    )
    model_faults: dict[str, str] = Field(
        default_factory=dict,
        description="Models it lists but failed to generate with (healthd's canary), and "
        "why: unhealthy for those alone.",
    )
    canaries_sent: int = Field(0, description="Canary generations healthd sent: health traffic.")
    model_mismatches: dict[str, ModelNames] = Field(
        default_factory=dict,
        description="Per model, what the proxy's answers named: a share naming another model "
        "past MODEL_MISMATCH_THRESHOLD makes it suspect (a model fault) until its canary passes.",
    )
    source: Literal["api", "config"]
    draining: bool = Field(description="No new requests go to it; those in flight finish.")
    notify_url: str | None = None
    notify_format: NotifyFormat = "json"
    lease_connected_at: datetime | None = Field(
        None, description="Held by a host's open lease since (null: no lease open)."
    )
    lease_heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = Field(
        None, description="Deactivated after this unless the lease is renewed."
    )
    endpoint_url: str
    api_key_set: bool
    capabilities: Capabilities
    metadata: OwnerMetadata
    tags: list[str]
    priority: int
    weight: int
    max_concurrent: int | None
    health_status: HealthStatusName
    last_checked_at: datetime | None
    status_changed_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_response_time_ms: float | None
    reported_models: list[str]
    success_rate: float | None
    avg_response_time_ms: float | None
    uptime_percent: float | None
    is_active: bool
    registered_at: datetime
    updated_at: datetime
    deregistered_at: datetime | None
    usage: Usage = Field(default_factory=Usage)


class ReportedLoad(BaseModel):
    """The server's own load figures, as the gateway worker that answers last read them."""

    source: str | None = Field(description="vllm, sglang, llamacpp or ollama; null: unreadable")
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = Field(None, description="0 to 1")
    loaded_models: list[str] | None = Field(None, description="Ollama: the models in memory")
    age_seconds: float | None = None
    stale: bool = Field(description="Too old to route on: the load counts as unknown")
    problem: str | None = Field(None, description="Why the last read failed")


class ServerDetail(ServerOut):
    recent_checks: list[HealthCheckOut] = Field(description="The last 20 checks, newest first.")
    reported_load: ReportedLoad | None = Field(
        None,
        description="Read several times a second by each worker, for servers among which "
        "routing chooses; null otherwise.",
    )
