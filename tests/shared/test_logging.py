"""Logging: JSON lines with the agreed fields, and redaction of every kind of secret."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from shared.logging import REDACTED, Redactor, configure_logging, get_logger


@pytest.mark.parametrize(
    ("entry", "secret"),
    [
        ({"api_key": "abc123def456"}, "abc123def456"),
        ({"X-API-Key": "abc123def456"}, "abc123def456"),
        ({"headers": {"Authorization": "Bearer tok-998877"}}, "tok-998877"),
        ({"backend_api_key": "k-55555555"}, "k-55555555"),
        ({"message": "sent Authorization: Bearer eyJhbGciOi.xyz.abc"}, "eyJhbGciOi.xyz.abc"),
        ({"message": "url was /v1?api_key=qwerty12345&x=1"}, "qwerty12345"),
        ({"message": 'body {"api_key": "in-json-999"}'}, "in-json-999"),
        ({"message": "openai key sk-proj-ABCDEFGH12345678"}, "sk-proj-ABCDEFGH12345678"),
        ({"message": "the admin key is known-admin-secret"}, "known-admin-secret"),
        ({"items": ["x", ("password=hunter2222",)]}, "hunter2222"),
        ({"message": "sent mvk_abcdEFGH1234ijklMNOP5678qrst_-WX"}, "abcdEFGH1234ijklMNOP5678"),
    ],
)
def test_redactor_removes_secrets(entry: dict[str, Any], secret: str) -> None:
    redactor = Redactor(["known-admin-secret"])
    cleaned = redactor(None, "info", dict(entry))
    assert secret not in json.dumps(cleaned, default=str)
    assert REDACTED in json.dumps(cleaned, default=str)


def test_redactor_keeps_harmless_fields() -> None:
    redactor = Redactor()
    entry = {
        "api_key_set": True,
        "model": "llama",
        "message": "registered",
        "tokens": 12,
        "prefix": "mvk_ab12",
        "detail": "key mvk_ab12… revoked",
    }
    assert redactor(None, "info", dict(entry)) == entry


def test_secrets_added_later_are_redacted() -> None:
    redactor = Redactor()
    redactor.add_secret("backend-key-123")
    assert redactor.text("x backend-key-123 y") == f"x {REDACTED} y"


def log_to_files(
    tmp_path: Path, redactor: Redactor, process: str = "gateway", component: str = "api"
) -> None:
    configure_logging(
        process=process,
        level="INFO",
        log_dir=str(tmp_path),
        default_component=component,
        redactor=redactor,
        console=False,
    )


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_json_file_entries_have_the_agreed_fields(tmp_path: Path) -> None:
    log_to_files(tmp_path, Redactor(["admin-secret-777"]))
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        get_logger("registry").info("server registered", api_key="k-123456789")
    logging.getLogger("uvicorn.error").warning("library says admin-secret-777")
    for handler in logging.getLogger().handlers:
        handler.flush()

    first, second = _read_json_lines(tmp_path / "gateway.log")
    assert first["message"] == "server registered"
    assert first["level"] == "info"
    assert first["component"] == "registry"
    assert first["request_id"] == "req-1"
    assert first["api_key"] == REDACTED
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() is not None
    assert second["component"] == "api"  # the process's default
    assert second["level"] == "warning"
    assert "admin-secret-777" not in second["message"]


def test_tracebacks_are_redacted(tmp_path: Path) -> None:
    log_to_files(tmp_path, Redactor(["trace-secret-42"]), "healthd", "health_checker")
    try:
        raise ValueError("failed with key trace-secret-42")
    except ValueError:
        get_logger("health_checker").exception("probe crashed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / "healthd.log").read_text()
    assert "probe crashed" in text and "ValueError" in text
    assert "trace-secret-42" not in text
