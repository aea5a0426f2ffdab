"""Configuration from the environment and `.env`, validated once at start.

Every setting is an upper-case environment variable (the names of section 6.3
of the requirements plus our own). Nothing here runs at import time: call
`load_settings()` from an entry point, so importing a module never needs the
environment.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.setting_typos import misspelt_settings
from shared.urls import Endpoint, endpoints_of

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
RedisFailureMode = Literal["fail_open", "fail_closed"]
RoutingStrategy = Literal["auto", "round_robin", "least_loaded", "fastest_response", "weighted"]

# Values people copy from examples; refused as an admin key off loopback.
PLACEHOLDER_KEYS = frozenset(
    {"", "change-me-in-production", "change-me", "changeme", "admin", "secret", "password"}
)
MIN_ADMIN_KEY_LENGTH = 16


def is_loopback_host(host: str) -> bool:
    """True when HOST only listens on this machine (so a weak admin key is harmless)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_commas(value: Any) -> Any:
    """Read `a, b ,c` from the environment as ["a", "b", "c"]."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def normalize_database_url(value: str) -> str:
    """A database URL the project can use: SQLite's, or PostgreSQL's through psycopg 3
    (whatever driver the URL names); ValueError for any other engine."""
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if not value.startswith(("sqlite:", "postgresql+psycopg://")):
        raise ValueError(
            "use SQLite (sqlite:///./multiverse.db) or PostgreSQL "
            "(postgresql+psycopg://user@host/database)"
        )
    return value


class Settings(BaseSettings):
    """All settings of gateway, healthd and gateway-admin (see README, 'Settings')."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    # Server
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="an integer from 1 to 65535")
    workers: int = Field(1, ge=1, le=64, description="an integer from 1 to 64")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_dir: str = Field("./logs", description="a folder for the JSON log files")

    # Database
    database_url: str = Field(
        "sqlite:///./multiverse.db",
        description=(
            "an SQLite URL (sqlite:///./multiverse.db) or a PostgreSQL one "
            "(postgresql+psycopg://user@host/database)"
        ),
    )

    # Redis, for what several instances share (optional)
    redis_url: str | None = Field(
        None, description="a Redis URL, e.g. redis://127.0.0.1:6379/0 (empty: no Redis)"
    )
    redis_failure_mode: RedisFailureMode = Field(
        "fail_open", description="fail_open (serve, count locally) or fail_closed (refuse)"
    )
    redis_key_prefix: str = Field(
        "multiverse",
        min_length=1,
        max_length=64,
        description="1 to 64 characters put before every Redis key",
    )

    # Servers from configuration, registered at gateway start (source "config")
    backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated backend URLs, each serving every model it lists",
    )
    backends_file: str | None = Field(
        None, description="a TOML file of [[backend]] registrations (the API's fields)"
    )
    upstream: str | None = Field(
        None,
        description="one backend URL: the gateway proxies that server alone "
        "(dialled whatever its address, as BACKENDS' servers are)",
    )

    # Security
    admin_api_key: SecretStr = Field(
        SecretStr(""),
        description=f"a random string of at least {MIN_ADMIN_KEY_LENGTH} characters",
    )
    discovery_direct: bool = Field(
        False, description="true or false: GET /route hands out backends' endpoints"
    )
    lease_heartbeat_seconds: float = Field(
        10, gt=0, le=300, description="a number of seconds above 0, at most 300"
    )
    lease_grace_seconds: float = Field(
        30, ge=0, le=3600, description="a number of seconds from 0 to 3600"
    )
    registration_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="comma-separated keys that may register new servers (and nothing else)",
    )
    allow_private_backends: bool = Field(False, description="true or false")
    open_model_names: bool = Field(
        True,
        description="true or false: false makes a name's first registrant its owner",
    )
    host_max_weight: int = Field(
        10, ge=1, le=1000, description="the largest weight a host may give its server (1-1000)"
    )
    admin_priority_tiers: int = Field(
        0,
        ge=0,
        le=1000,
        description="priority tiers 0 to N-1 only the admin may assign (0: none reserved)",
    )
    metrics_api_key: SecretStr = Field(
        SecretStr(""), description="a key /metrics requires as a Bearer token (empty: open)"
    )
    healthd_metrics_port: int = Field(
        0, ge=0, le=65535, description="port of healthd's /metrics on 127.0.0.1 (0: off)"
    )
    require_client_auth: bool = Field(False, description="true or false")
    client_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated keys"
    )
    enable_cors: bool = Field(True, description="true or false")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="comma-separated origins, or *"
    )

    # Health checking
    health_check_interval_seconds: float = Field(
        60, ge=1, le=300, description="a number of seconds from 1 to 300"
    )
    health_check_timeout_seconds: float = Field(
        10, gt=0, le=120, description="a number of seconds above 0, at most 120"
    )
    max_consecutive_failures: int = Field(3, ge=1, le=1000, description="an integer from 1")
    canary_every_checks: int = Field(
        5,
        ge=0,
        le=1000,
        description="send a 1-token canary generation every N-th check (0: never)",
    )
    model_mismatch_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a share above 0, at most 1, of answers naming another model",
    )
    model_mismatch_min_answers: int = Field(
        20, ge=1, le=1_000_000, description="an integer from 1: answers before judging"
    )
    verify_backend_tls: bool = Field(True, description="true or false")
    auto_deregister: bool = Field(False, description="true or false")

    # Request routing
    request_timeout_seconds: float = Field(
        300, gt=0, le=3600, description="a number of seconds above 0, at most 3600"
    )
    max_retry_attempts: int = Field(2, ge=0, le=10, description="an integer from 0 to 10")
    connect_timeout_seconds: float = Field(
        5, gt=0, le=60, description="a number of seconds above 0, at most 60"
    )
    stream_idle_timeout_seconds: float = Field(
        60, gt=0, le=3600, description="a number of seconds above 0, at most 3600"
    )
    first_byte_timeout_seconds: float = Field(
        300, gt=0, le=3600, description="a number of seconds above 0, at most 3600"
    )
    stream_usage_accounting: bool = Field(
        True,
        description="true or false: ask backends for a stream's usage the client did not ask "
        "for, and remove it from the client's stream",
    )
    outlier_consecutive_failures: int = Field(
        3, ge=1, le=1000, description="an integer from 1 to 1000"
    )
    outlier_ejection_seconds: float = Field(
        30, gt=0, le=3600, description="a number of seconds above 0, at most 3600"
    )
    outlier_max_ejection_percent: int = Field(
        50, ge=0, le=100, description="an integer from 0 to 100"
    )
    backend_max_connections: int = Field(
        100, ge=1, le=100_000, description="an integer from 1 to 100000"
    )
    shutdown_grace_seconds: int = Field(
        300, ge=0, le=3600, description="whole seconds from 0 to 3600"
    )
    routing_strategy: RoutingStrategy = Field(
        "auto", description="auto, round_robin, least_loaded, fastest_response or weighted"
    )
    slow_start_seconds: float = Field(
        30, ge=0, le=3600, description="a number of seconds from 0 (off) to 3600"
    )
    queue_timeout_seconds: float = Field(
        30,
        ge=0,
        le=300,
        description="seconds a request waits for a slot when every backend of its model is "
        "at max_concurrent, from 0 (answer at once) to 300",
    )
    queue_max_per_key: int = Field(
        50, ge=1, le=100_000, description="requests one client may have waiting, from 1"
    )
    queue_max_total: int = Field(
        1000, ge=1, le=1_000_000, description="requests waiting in all, per worker, from 1"
    )
    recovery_wait_seconds: float = Field(
        0,
        ge=0,
        le=300,
        description="seconds a request waits for a model with no healthy backend to "
        "recover, from 0 (answer 503 at once) to 300",
    )
    max_request_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, le=1024**3, description="bytes, from 1024 to 1073741824"
    )
    rate_limit_per_minute: int = Field(
        60,
        ge=0,
        le=1_000_000,
        description="requests per minute per client (address, or key without a limit of "
        "its own); 0 turns it off",
    )
    key_tokens_per_minute: int = Field(
        0, ge=0, le=10**12, description="a key's tokens per minute unless set; 0: no limit"
    )
    key_tokens_per_day: int = Field(
        0, ge=0, le=10**12, description="a key's tokens per UTC day unless set; 0: no limit"
    )
    key_max_concurrent: int = Field(
        0, ge=0, le=100_000, description="a key's requests at once unless set; 0: no limit"
    )
    token_reservation_default: int = Field(
        1024,
        ge=1,
        le=10**7,
        description="tokens reserved for a request that gives no max_tokens, from 1",
    )
    header_timeout_seconds: float = Field(
        10, gt=0, le=300, description="a number of seconds above 0, at most 300"
    )
    max_connections: int = Field(
        10_000, ge=1, le=1_000_000, description="client connections per worker, from 1"
    )

    @field_validator("database_url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        # The registry's change triggers (how every process learns of a change) exist
        # for SQLite and PostgreSQL only; another engine would silently never reload.
        return normalize_database_url(value)

    @field_validator(
        "client_api_keys", "cors_origins", "backends", "registration_keys", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use a URL like redis://127.0.0.1:6379/0 (or rediss://, unix://)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        key = self.admin_api_key.get_secret_value()
        if not is_loopback_host(self.host):
            if key.lower() in PLACEHOLDER_KEYS:
                raise ValueError(
                    "ADMIN_API_KEY: an empty or placeholder key is only allowed when HOST is "
                    "loopback; set a random key (e.g. `openssl rand -hex 24`)"
                )
            if len(key) < MIN_ADMIN_KEY_LENGTH:
                raise ValueError(
                    f"ADMIN_API_KEY: must be at least {MIN_ADMIN_KEY_LENGTH} characters "
                    "when HOST is not loopback"
                )
        if self.require_client_auth and not self.client_api_keys:
            raise ValueError(
                "CLIENT_API_KEYS: must list at least one key when REQUIRE_CLIENT_AUTH=true"
            )
        return self

    @property
    def configured_endpoints(self) -> frozenset[Endpoint]:
        """Where UPSTREAM and BACKENDS point: the operator named these servers, often on
        this machine, so they alone are dialled without the address guard; every other
        address (registrations, leases, probes, notify_url) follows ALLOW_PRIVATE_BACKENDS."""
        return endpoints_of([*self.backends, *([self.upstream] if self.upstream else [])])

    @property
    def admin_key_configured(self) -> bool:
        """An empty key disables the admin API rather than leaving it open."""
        return bool(self.admin_api_key.get_secret_value())


SECRET_SETTINGS = frozenset(
    {"admin_api_key", "client_api_keys", "metrics_api_key", "registration_keys"}
)
# Settings that are URLs which may carry a password: shown without it.
URL_SETTINGS = frozenset({"database_url", "redis_url"})


class SettingsError(Exception):
    """A setting has a bad value; `str()` is one line per problem, fit for stderr."""


def describe_errors(error: ValidationError) -> str:
    """Turn pydantic's report into lines that name the variable and what is allowed."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        if not field:
            # Cross-field checks already start with the variable's name.
            lines.append(f"invalid setting {item['msg'].removeprefix('Value error, ')}")
            continue
        name = field.upper()
        info = Settings.model_fields.get(field)
        allowed = info.description if info is not None else ""
        # A database URL may carry a password: never echoed either.
        hidden = field in SECRET_SETTINGS or field == "database_url"
        shown = "" if hidden else f" (got {item.get('input')!r})"
        lines.append(f"invalid setting {name}{shown}: {item['msg']}; allowed: {allowed}")
    return "\n".join(lines)


def setting_names() -> list[str]:
    return sorted(name.upper() for name in Settings.model_fields)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and `.env`; raise SettingsError if any is bad
    (or if a name there looks like a misspelt setting, which would silently not apply)."""
    dotenv = Path(".env")
    dotenv_keys = list(dotenv_values(dotenv)) if dotenv.is_file() else []
    typos = misspelt_settings(dotenv_keys, os.environ, setting_names())
    if typos:
        raise SettingsError("\n".join(typos))
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
