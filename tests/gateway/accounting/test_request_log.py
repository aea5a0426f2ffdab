"""The proxy's line per request: the entry structlog would write, held back and written in order."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.accounting.request_log import BATCH_SECONDS, RequestLog
from shared.logging import REDACTED, LogOutputs, Redactor
from tests.shared.test_logging import _read_json_lines, log_to_files

SERVED: dict[str, Any] = {
    "model": "m 'quoted' \"too\" sk-proj-ABCDEFGH12345678",
    "registration_id": "0b0f6f5e-2d54-4c33-9d4a-5f1c2d3e4f50",
    "status": 200,
    "latency_ms": 1.5,
    "stream": False,
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"stream": True, "client_gone": True},
        {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        {"stream": True, "client_gone": False, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    ],
)
def test_the_line_is_what_structlog_would_write(tmp_path: Path, extra: dict[str, Any]) -> None:
    """Rendered from templates: the same JSON entry and console line, the model redacted."""
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


async def test_lines_are_batched_and_stay_in_order(tmp_path: Path) -> None:
    outputs = LogOutputs(None, tmp_path / "gateway.log")
    log = RequestLog(outputs, Redactor(), level="INFO", component="api")
    for number in range(3):
        log.served(f"r{number}", **SERVED)
    assert (tmp_path / "gateway.log").read_text() == ""  # held back
    outputs.write("warning", {"event": "something else", "timestamp": "t"})
    lines = _read_json_lines(tmp_path / "gateway.log")
    assert [line.get("request_id") for line in lines] == ["r0", "r1", "r2", None]

    log.served("r3", **SERVED)  # nothing else comes: the loop's timer writes it
    deadline = asyncio.get_running_loop().time() + 5
    while len(_read_json_lines(tmp_path / "gateway.log")) < 5:
        assert asyncio.get_running_loop().time() < deadline, "the batch was never written"
        await asyncio.sleep(BATCH_SECONDS)
    assert _read_json_lines(tmp_path / "gateway.log")[-1]["request_id"] == "r3"
    outputs.close()


def test_lines_follow_the_level(tmp_path: Path) -> None:
    outputs = LogOutputs(None, tmp_path / "gateway.log")
    RequestLog(outputs, Redactor(), level="WARNING", component="api").served("r", **SERVED)
    outputs.close()
    assert (tmp_path / "gateway.log").read_text() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_a_terminal_gets_structlogs_pretty_line_at_once(tmp_path: Path) -> None:
    terminal = Terminal()
    outputs = LogOutputs(terminal, tmp_path / "gateway.log")
    RequestLog(outputs, Redactor(), level="INFO", component="api").served("r", **SERVED)
    assert "request served" in terminal.getvalue()
    (entry,) = _read_json_lines(tmp_path / "gateway.log")
    assert entry["request_id"] == "r" and REDACTED in entry["model"]
    outputs.close()


def test_without_outputs_the_line_goes_through_structlog(tmp_path: Path) -> None:
    log_to_files(tmp_path, Redactor())
    with structlog.contextvars.bound_contextvars(request_id="req-9"):
        RequestLog(None, Redactor(), level="INFO", component="api").served("req-9", **SERVED)
    (entry,) = _read_json_lines(tmp_path / "gateway.log")
    assert entry["message"] == "request served" and entry["request_id"] == "req-9"
    assert entry["status"] == 200 and REDACTED in entry["model"]
