"""Logging: JSON lines with the agreed fields, and redaction of every kind of secret."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from shared.logging import (
    REDACTED,
    LogOutputs,
    Redactor,
    RequestLog,
    configure_logging,
    get_logger,
)
from tests.support import wait_for


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
    ],
)
def test_redactor_removes_secrets(entry: dict[str, Any], secret: str) -> None:
    redactor = Redactor(["known-admin-secret"])
    cleaned = redactor(None, "info", dict(entry))
    assert secret not in json.dumps(cleaned, default=str)
    assert REDACTED in json.dumps(cleaned, default=str)


def test_redactor_keeps_harmless_fields() -> None:
    redactor = Redactor()
    entry = {"api_key_set": True, "model": "llama", "message": "registered", "tokens": 12}
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


SERVED: dict[str, Any] = {
    "model": "m 'quoted' \"too\" sk-proj-ABCDEFGH12345678",
    "registration_id": "0b0f6f5e-2d54-4c33-9d4a-5f1c2d3e4f50",
    "status": 200,
    "latency_ms": 1.5,
    "stream": False,
}


@pytest.mark.parametrize("extra", [{}, {"stream": True, "client_gone": True}])
def test_the_request_line_is_what_structlog_would_write(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    """RequestLog skips structlog's chain: same JSON and console lines, the model redacted."""
    console = (tmp_path / "console.txt").open("w")
    outputs = LogOutputs(console, tmp_path / "gateway.log")
    fields = {**SERVED, **extra}
    redactor = Redactor()
    RequestLog(outputs, redactor, level="INFO", component="api").served("req-1", **fields)
    expected = {
        "component": "api",
        "event": "request served",
        **fields,
        "model": redactor.text(fields["model"]),
        "request_id": "req-1",
    }
    outputs.write("info", {"timestamp": "2026-01-01T00:00:00.000001Z", **expected})
    outputs.close()
    console.close()

    fast, slow = _read_json_lines(tmp_path / "gateway.log")
    assert REDACTED in fast["model"] and "ABCDEFGH" not in fast["model"]
    assert datetime.fromisoformat(fast.pop("timestamp")).utcoffset() is not None
    slow.pop("timestamp")
    assert fast == slow
    fast_line, slow_line = (tmp_path / "console.txt").read_text().splitlines()
    after_timestamp = re.compile(r"^timestamp='[0-9T:.-]+Z' ")
    assert after_timestamp.match(fast_line) and after_timestamp.match(slow_line)
    assert after_timestamp.sub("", fast_line) == after_timestamp.sub("", slow_line)


def test_request_lines_reach_the_file_without_a_flush_of_their_own(tmp_path: Path) -> None:
    outputs = LogOutputs(None, tmp_path / "gateway.log")
    RequestLog(outputs, Redactor(), level="INFO", component="api").served("r", **SERVED)
    # The flusher thread writes it out within FLUSH_SECONDS; nothing else is logged.
    wait_for(lambda: (tmp_path / "gateway.log").read_text(), timeout=5, what="the flush")
    outputs.close()


def test_request_lines_follow_the_level(tmp_path: Path) -> None:
    outputs = LogOutputs(None, tmp_path / "gateway.log")
    RequestLog(outputs, Redactor(), level="WARNING", component="api").served("r", **SERVED)
    outputs.close()
    assert (tmp_path / "gateway.log").read_text() == ""


def test_request_lines_without_outputs_go_through_structlog(tmp_path: Path) -> None:
    log_to_files(tmp_path, Redactor())
    with structlog.contextvars.bound_contextvars(request_id="req-9"):
        RequestLog(None, Redactor(), level="INFO", component="api").served("req-9", **SERVED)
    (entry,) = _read_json_lines(tmp_path / "gateway.log")
    assert entry["message"] == "request served" and entry["request_id"] == "req-9"
    assert entry["status"] == 200 and REDACTED in entry["model"]
