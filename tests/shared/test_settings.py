"""Settings: defaults, parsing, and one clear line per bad value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared.setting_typos import misspelt_settings
from shared.settings import Settings, SettingsError, load_settings
from shared.urls import without_password
from tests.support import BIN, clean_environment


def test_defaults_match_the_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.database_url == "sqlite:///./multiverse.db"
    assert settings.health_check_interval_seconds == 60
    assert settings.health_check_timeout_seconds == 10
    assert settings.max_consecutive_failures == 3
    assert settings.request_timeout_seconds == 300
    assert settings.max_retry_attempts == 2
    assert settings.require_client_auth is False
    assert settings.enable_cors is True and settings.cors_origins == ["*"]
    assert settings.allow_private_backends is False


def test_upstream_exempts_its_own_server_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """UPSTREAM no longer turns the address guard off for every address (#19 item 6)."""
    monkeypatch.setenv("UPSTREAM", "http://127.0.0.1:9000")
    monkeypatch.setenv("BACKENDS", "http://localhost:9001/v1, https://lab.test")
    settings = load_settings()
    assert settings.allow_private_backends is False
    assert settings.configured_endpoints == {
        ("127.0.0.1", 9000),
        ("localhost", 9001),
        ("lab.test", 443),
    }


def test_comma_lists_and_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENT_API_KEYS", " key-one, key-two ,,")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.client_api_keys] == ["key-one", "key-two"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.log_level == "DEBUG"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=9123\nALLOW_PRIVATE_BACKENDS=true\n")
    settings = load_settings()
    assert settings.port == 9123 and settings.allow_private_backends is True


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PORT", "abc", "1 to 65535"),
        ("PORT", "70000", "1 to 65535"),
        ("WORKERS", "0", "1 to 64"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("HEALTH_CHECK_INTERVAL_SECONDS", "0", "1 to 300"),
        ("HEALTH_CHECK_INTERVAL_SECONDS", "301", "1 to 300"),
        ("HEALTH_CHECK_TIMEOUT_SECONDS", "-1", "above 0"),
        ("MAX_CONSECUTIVE_FAILURES", "0", "from 1"),
        ("REQUEST_TIMEOUT_SECONDS", "0", "above 0"),
        ("MAX_RETRY_ATTEMPTS", "11", "0 to 10"),
        ("REQUIRE_CLIENT_AUTH", "maybe", "true or false"),
        ("ALLOW_PRIVATE_BACKENDS", "perhaps", "true or false"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.count("\n") == 0
    assert name in message and allowed in message and repr(value) in message


@pytest.mark.parametrize("key", ["", "change-me-in-production", "changeme", "short-key"])
def test_weak_admin_key_is_refused_off_loopback(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("ADMIN_API_KEY", key)
    with pytest.raises(SettingsError, match="ADMIN_API_KEY"):
        load_settings()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_weak_admin_key_is_allowed_on_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("HOST", host)
    monkeypatch.setenv("ADMIN_API_KEY", "change-me-in-production")
    assert load_settings().host == host


def test_strong_admin_key_is_accepted_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("ADMIN_API_KEY", "Zq8v4W1xkP0r9sT2uY5bN7cM")
    assert load_settings().host == "0.0.0.0"


def test_client_auth_needs_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUIRE_CLIENT_AUTH", "true")
    with pytest.raises(SettingsError, match="CLIENT_API_KEYS"):
        load_settings()


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("ADMIN_API_KEY", "tiny-secret")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "tiny-secret" not in str(raised.value)


@pytest.mark.parametrize("program", ["gateway", "healthd"])
def test_processes_stop_at_start_on_a_bad_value(tmp_path: Path, program: str) -> None:
    result = subprocess.run(
        [str(BIN / program)],
        cwd=tmp_path,
        env=clean_environment({"PORT": "not-a-port"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "1 to 65535" in lines[0]


KNOWN = ["ADMIN_API_KEY", "DATABASE_URL", "LOG_LEVEL", "REQUIRE_CLIENT_AUTH", "WORKERS"]


@pytest.mark.parametrize(
    ("dotenv", "environment", "expected"),
    [
        (["REQUIRE_CLIENT_AUTHH"], [], ["REQUIRE_CLIENT_AUTHH in .env; did you mean REQUIRE_"]),
        (["requre_client_auth"], [], ["requre_client_auth in .env; did you mean REQUIRE_"]),
        (["LOGLEVEL", "WORKER"], [], ["LOGLEVEL in .env", "WORKER in .env"]),
        (["REQUIRE_CLIENT_AUTH", "GATEWAY_URL", "COMPOSE_PROJECT_NAME"], [], []),
        ([], ["REQURE_CLIENT_AUTH"], ["REQURE_CLIENT_AUTH in the environment; did you mean"]),
        # Other programs' variables on a normal machine: never taken for ours.
        (
            [],
            ["LOGLEVEL", "WORKER", "DATABASE_URI", "OPENAI_API_KEY", "XDG_RUNTIME_DIR"],
            [],
        ),
        ([], ["DBUS_SESSION_BUS_ADDRESS", "PYTEST_CURRENT_TEST", "GATEWAY_MANAGEMENT_TOKEN"], []),
    ],
)
def test_names_like_a_setting_are_typos(
    dotenv: list[str], environment: list[str], expected: list[str]
) -> None:
    """#19 item 14 (part): a misspelt setting would be ignored silently."""
    lines = misspelt_settings(dotenv, environment, KNOWN)
    assert len(lines) == len(expected)
    for line, fragment in zip(lines, expected, strict=True):
        assert line.startswith("unknown setting ") and fragment in line


@pytest.mark.parametrize(
    ("dotenv", "environment", "line"),
    [
        (
            "REQUIRE_CLIENT_AUTHH=true\n",
            {},
            "unknown setting REQUIRE_CLIENT_AUTHH in .env; did you mean REQUIRE_CLIENT_AUTH?",
        ),
        (
            "PORT=8123\n",
            {"REQURE_CLIENT_AUTH": "true"},
            "unknown setting REQURE_CLIENT_AUTH in the environment; "
            "did you mean REQUIRE_CLIENT_AUTH?",
        ),
    ],
)
def test_the_gateway_stops_on_a_misspelt_setting(
    tmp_path: Path, dotenv: str, environment: dict[str, str], line: str
) -> None:
    (tmp_path / ".env").write_text(dotenv)
    result = subprocess.run(
        [str(BIN / "gateway")],
        cwd=tmp_path,
        env=clean_environment(environment),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"gateway: {line}"], result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///./multiverse.db", "sqlite:///./multiverse.db"),
        ("postgresql+psycopg://gw@db/gw", "postgresql+psycopg://gw@db/gw"),
        ("postgresql+psycopg://gw:pw-secret@db:5432/gw", "postgresql+psycopg://gw:***@db:5432/gw"),
        ("redis://:pw-secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:p%40ss@cache/1", "rediss://user:***@cache/1"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


def test_the_system_page_and_the_logs_never_show_a_database_or_redis_password() -> None:
    from gateway.admin.system import masked_settings
    from shared.startup import redactor_for

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="postgresql://gw:pg-secret-1@db/gw",
        redis_url="redis://:redis-secret-2@cache:6379/0",
    )
    assert settings.database_url == "postgresql+psycopg://gw:pg-secret-1@db/gw"
    shown = str(masked_settings(settings))
    assert "pg-secret-1" not in shown and "redis-secret-2" not in shown
    assert "postgresql+psycopg://gw:***@db/gw" in shown
    redacted = redactor_for(settings).text("connect to gw:pg-secret-1 and redis-secret-2")
    assert "pg-secret-1" not in redacted and "redis-secret-2" not in redacted


@pytest.mark.parametrize(
    "bad",
    [
        ("DATABASE_URL", "mysql://db/gw"),
        ("REDIS_URL", "http://cache:6379"),
        ("REDIS_FAILURE_MODE", "sometimes"),
    ],
)
def test_cluster_settings_refuse_what_they_cannot_use(
    monkeypatch: pytest.MonkeyPatch, bad: tuple[str, str]
) -> None:
    monkeypatch.setenv(*bad)
    with pytest.raises(SettingsError, match=bad[0]):
        load_settings()
