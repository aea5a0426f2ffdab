"""Reading what servers publish of their load, as tables: good pages, and bad ones."""

from __future__ import annotations

import json

import pytest

from gateway.routing.reported.reports import (
    MAX_REPORT_BYTES,
    BadReport,
    Report,
    holds,
    ollama_name,
    parse_metrics,
    parse_ollama_ps,
)

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 3.0
vllm:num_requests_running{engine="0",model_name="b"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
vllm:num_requests_waiting{engine="0",model_name="a"} 2.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.42
vllm:request_success_total{finished_reason="stop"} 7.0
"""
SGLANG = """sglang:num_running_reqs{model_name="m"} 5
sglang:num_queue_reqs{model_name="m"} 4
sglang:token_usage{model_name="m"} 0.9
"""
LLAMACPP = """# HELP llamacpp:requests_processing Number of requests processing.
llamacpp:requests_processing 1
llamacpp:requests_deferred 0
llamacpp:kv_cache_usage_ratio 0.25
"""
OLD_VLLM = "vllm:num_requests_running 0\nvllm:gpu_cache_usage_perc 0.5\n"


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (VLLM, Report(7.0, "vllm", waiting=2.0, running=4.0, kv_usage=0.42)),
        (SGLANG, Report(7.0, "sglang", waiting=4.0, running=5.0, kv_usage=0.9)),
        (LLAMACPP, Report(7.0, "llamacpp", waiting=0.0, running=1.0, kv_usage=0.25)),
        (OLD_VLLM, Report(7.0, "vllm", waiting=0.0, running=0.0, kv_usage=0.5)),
        # No waiting figure: none waiting; no KV figure: unknown.
        ("vllm:num_requests_running 2\n", Report(7.0, "vllm", running=2.0)),
        ("vllm:num_requests_running 2", Report(7.0, "vllm", running=2.0)),  # no last newline
        ("vllm:num_requests_running 1e0 1700000000\n", Report(7.0, "vllm", running=1.0)),
    ],
)
def test_metrics_pages(page: str, expected: Report) -> None:
    assert parse_metrics(page.encode(), 7.0) == expected


@pytest.mark.parametrize(
    ("page", "why"),
    [
        ("", "no queue figures"),
        ("# HELP vllm:num_requests_running only a help line\n", "no queue figures"),
        ("<html>Not Found</html>", "no queue figures"),
        ("vllm:num_requests_running_total 3\n", "no queue figures"),  # another metric
        ('vllm:num_requests_running{a="b" 3\n', "unclosed labels"),
        ("vllm:num_requests_running lots\n", "is not a number"),
        ("vllm:num_requests_running NaN\n", "out of range"),
        ("vllm:num_requests_running -1\n", "out of range"),
        ("vllm:num_requests_running +Inf\n", "out of range"),
        ("vllm:num_requests_running \n", "no value"),
        ("vllm:num_requests_running 1\n" + "#" * MAX_REPORT_BYTES, "over"),
    ],
)
def test_bad_metrics_pages(page: str, why: str) -> None:
    with pytest.raises(BadReport, match=why):
        parse_metrics(page.encode(), 0.0)


def test_a_kv_figure_above_one_is_read_as_full() -> None:
    assert (
        parse_metrics(b"vllm:num_requests_running 0\nvllm:kv_cache_usage_perc 7\n", 0).kv_usage == 1
    )


@pytest.mark.parametrize(
    ("body", "loaded"),
    [
        ({"models": []}, frozenset()),
        (
            {"models": [{"name": "llama3:latest", "size": 1}, {"model": "qwen:7b"}]},
            {"llama3:latest", "qwen:7b"},
        ),
        ({"models": [{"name": ""}, "junk", {"name": 5}]}, frozenset()),
    ],
)
def test_ollama_ps(body: object, loaded: frozenset[str]) -> None:
    report = parse_ollama_ps(json.dumps(body).encode(), 3.0)
    assert report == Report(3.0, "ollama", loaded=frozenset(loaded))


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"models": 3}', b"[" * 100_000])
def test_bad_ollama_ps(body: bytes) -> None:
    with pytest.raises(BadReport):
        parse_ollama_ps(body, 0.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("llama3", "llama3:latest"), ("llama3:8b", "llama3:8b"), ("hf.co/x/y", "hf.co/x/y:latest")],
)
def test_ollama_names(name: str, expected: str) -> None:
    assert ollama_name(name) == expected


@pytest.mark.parametrize(
    ("report", "model", "expected"),
    [
        (Report(0, "ollama", loaded=frozenset({"llama3:latest"})), "llama3", True),
        (Report(0, "ollama", loaded=frozenset({"llama3"})), "llama3:latest", True),
        (Report(0, "ollama", loaded=frozenset({"qwen:7b"})), "llama3", False),
        (Report(0, "vllm", running=1), "llama3", None),  # vLLM does not say
    ],
)
def test_holds(report: Report, model: str, expected: bool | None) -> None:
    assert holds(report, model) is expected
