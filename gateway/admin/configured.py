"""Servers from configuration: BACKENDS, BACKENDS_FILE and UPSTREAM, registered at start.

An operator who runs the pool declares it in configuration; a user with one
server starts with `UPSTREAM=<url>`. `gateway.main` reads the configuration
once, before the workers start, and brings the registry in line in one
transaction:

- an entry that matches a registration from configuration (same endpoint and
  model) updates it, re-activating it if it was deactivated;
- a new entry is registered (`source: config`, health unknown: healthd probes
  it within a tick, and a named model the backend does not list fails there);
- a registration from configuration that no entry matches any more is
  deactivated (soft: its history stays);
- registrations made through the API are never touched; an entry that matches
  one is left to it.

Entries take the admin API's fields and are validated by the same model, so a
mistake is one line naming the entry and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from gateway.admin.schemas import RegisterRequest
from gateway.json_bodies import describe_validation_error
from shared.db import Database
from shared.models import HealthStatus, ModelServer, RegistrationSource, utcnow
from shared.settings import Settings


class ConfigurationError(Exception):
    """The configured backends cannot be read; the message names the entry and field."""


def _entry(document: Any, where: str) -> RegisterRequest:
    if not isinstance(document, dict):
        raise ConfigurationError(f"{where}: expected a table of registration fields")
    try:
        return RegisterRequest.model_validate(document)
    except ValidationError as error:
        message, _ = describe_validation_error(error)
        raise ConfigurationError(f"{where}: {message}") from None


def read_backends_file(path: Path) -> list[RegisterRequest]:
    """`[[backend]]` tables of a TOML file, each with the admin API's registration fields."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"BACKENDS_FILE: cannot read {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"BACKENDS_FILE: {path} is not valid TOML: {error}") from None
    unknown = set(document) - {"backend"}
    if unknown:
        raise ConfigurationError(
            f"BACKENDS_FILE: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "write each server as a [[backend]] table"
        )
    entries = document.get("backend", [])
    if not isinstance(entries, list):
        raise ConfigurationError("BACKENDS_FILE: write each server as a [[backend]] table")
    return [
        _entry(entry, f"BACKENDS_FILE {path}, backend {n}") for n, entry in enumerate(entries, 1)
    ]


def configured_backends(settings: Settings) -> list[RegisterRequest]:
    """Every registration the configuration declares, validated."""
    declared = [
        _entry({"endpoint_url": url}, f"BACKENDS entry {n}")
        for n, url in enumerate(settings.backends, 1)
    ]
    if settings.upstream:
        declared.append(_entry({"endpoint_url": settings.upstream}, "UPSTREAM"))
    if settings.backends_file:
        declared += read_backends_file(Path(settings.backends_file))
    return declared


@dataclass
class SyncReport:
    registered: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    left_to_the_api: list[str] = field(default_factory=list)


def _apply(server: ModelServer, entry: RegisterRequest) -> None:
    server.model_name = entry.model_name
    server.backend_model = entry.backend_model
    server.endpoint_url = entry.endpoint_url
    server.api_key = entry.api_key.get_secret_value() if entry.api_key else None
    server.max_tokens = entry.capabilities.max_tokens
    server.context_length = entry.capabilities.context_length
    server.streaming_supported = entry.capabilities.streaming
    server.student_id = entry.metadata.student_id
    server.description = entry.metadata.description
    server.tags = sorted(set(entry.tags))
    server.priority = entry.priority
    server.weight = entry.weight
    server.max_concurrent = entry.max_concurrent
    server.notify_url = entry.notify_url


def sync_configured(database: Database, entries: list[RegisterRequest]) -> SyncReport:
    """Bring the registrations from configuration in line with `entries`, in one write."""
    report = SyncReport()
    now = utcnow()
    with database.writing(durable=True) as session:
        rows = session.scalars(select(ModelServer).order_by(ModelServer.registered_at)).all()
        configured = {
            (row.endpoint_url, row.model_name): row
            for row in rows
            if row.source == RegistrationSource.CONFIG.value
        }
        by_api = {
            (row.endpoint_url, row.model_name)
            for row in rows
            if row.is_active and row.source != RegistrationSource.CONFIG.value
        }
        matched: set[str] = set()
        for entry in entries:
            key = (entry.endpoint_url, entry.model_name)
            server = configured.get(key)
            if server is None and key in by_api:
                report.left_to_the_api.append(entry.endpoint_url)
                continue
            if server is None:
                server = ModelServer(
                    source=RegistrationSource.CONFIG.value,
                    health_status=HealthStatus.UNKNOWN.value,
                    consecutive_failures=0,
                    reported_models=[],
                    model_details={},
                    registered_at=now,
                    created_at=now,
                )
                session.add(server)
                configured[key] = server
                report.registered.append(entry.endpoint_url)
            elif server.id in matched:
                continue  # declared twice
            else:
                report.updated.append(server.id)
            _apply(server, entry)
            if not server.is_active:
                server.is_active, server.deregistered_at = True, None
                server.health_status = HealthStatus.UNKNOWN.value
            server.updated_at = now
            session.flush()
            matched.add(server.id)
        for server in configured.values():
            if server.is_active and server.id not in matched:
                server.is_active, server.deregistered_at, server.updated_at = False, now, now
                report.deactivated.append(server.id)
    return report
