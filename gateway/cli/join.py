"""`gateway-admin join`: the agent a host runs beside its model server.

It holds a lease on the gateway (`POST /admin/leases`, an SSE stream) for as
long as it runs, and only ever makes outgoing connections, so it works from a
laptop behind NAT whose model server is published through a tunnel
(`--endpoint` is that public URL). It reconnects with backoff (1 s doubling to
30 s) and keeps the registration's management token in a file under the
user's config folder, so a restart re-attaches the same registration. It
acknowledges every heartbeat (only that renews the lease, so a frozen agent
loses it), reconnects quietly when the gateway restarts (a `reconnect` event),
and exits when its registration was deregistered (the token is revoked: the
kept file goes). Ctrl-C drains the server (requests in flight finish) and ends
the lease.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from gateway.cli.api_client import default_gateway_url, fail

# Where model servers usually listen on a host: Ollama, vLLM, llama.cpp, LM Studio.
USUAL_PORTS = {11434: "Ollama", 8000: "vLLM", 8080: "llama.cpp", 1234: "LM Studio"}
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0
DEFAULT_NAME = "default"


def next_backoff(current: float) -> float:
    return min(MAX_BACKOFF, current * 2)


def _tokens_folder() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "multiverse-gateway" / "tokens"


def token_file(gateway: str, model: str | None, name: str = DEFAULT_NAME) -> Path:
    """One file per (gateway, model, name), under XDG_CONFIG_HOME or ~/.config: not
    per endpoint, so a host whose tunnel URL changed re-attaches the same registration
    (two servers on one machine for the same gateway and model tell apart by --name)."""
    key = hashlib.sha256(f"{gateway}|{model or ''}|{name}".encode()).hexdigest()[:16]
    return _tokens_folder() / f"{key}.token"


def legacy_token_file(gateway: str, endpoint: str, model: str | None) -> Path:
    """Where agents before #21 kept the token: per endpoint too."""
    key = hashlib.sha256(f"{gateway}|{endpoint}|{model or ''}".encode()).hexdigest()[:16]
    return _tokens_folder() / f"{key}.token"


def keep_token(path: Path, token: str) -> None:
    """Write a token readable by its owner only (mode 600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token)


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def say(line: str, *, err: bool = False) -> None:
    """One status line, with the time: a host behind NAT watches these live."""
    click.echo(f"[{now_stamp()}] {line}", err=err)


def detect_servers(timeout: float = 1.0) -> list[tuple[str, str]]:
    """Model servers on this machine's usual ports: (URL, what usually listens there)."""
    found = []
    for port, name in USUAL_PORTS.items():
        url = f"http://127.0.0.1:{port}"
        try:
            if httpx.get(f"{url}/v1/models", timeout=timeout).status_code == 200:
                found.append((url, name))
        except httpx.HTTPError:
            continue
    return found


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a server-sent event stream, one per blank-line-ended event."""
    kind, data = "message", ""
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads(data)
            kind, data = "message", ""
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


class Refused(Exception):
    """The gateway answered the lease with an error: retried if it is the server's (5xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Ending(enum.Enum):
    """How a lease stream ended without an error."""

    ENDED = "ended"  # the gateway ended the lease (expired, or a newer lease took it)
    RESTARTING = "restarting"  # the gateway is shutting down: reconnect, quietly


class Agent:
    def __init__(self, gateway: str, key: str | None, body: dict[str, Any], tokens: Path) -> None:
        self.gateway = gateway.rstrip("/")
        self.key = key
        self.body = body
        self.tokens = tokens
        self.registration_id: str | None = None
        self.status: tuple[str, bool, str | None] | None = None
        self.restarting = False  # told so by the gateway, and not back yet

    def _token(self) -> str | None:
        return self.tokens.read_text().strip() if self.tokens.exists() else None

    def _headers(self) -> dict[str, str]:
        token = self._token()
        return {"X-Management-Token": token} if token else {"X-API-Key": self.key or ""}

    def hold(self) -> Ending:
        """One lease, until the stream ends; raises httpx errors on a broken connection."""
        with_token = self.tokens.exists()
        with httpx.stream(
            "POST",
            f"{self.gateway}/admin/leases",
            json=self.body,
            headers=self._headers(),
            timeout=httpx.Timeout(30, read=None),
            trust_env=False,
        ) as response:
            if response.status_code != 200:
                response.read()
                if response.status_code == 403 and with_token:
                    # A token the gateway refuses is dead for good (deregistered): the
                    # next join registers anew with --key.
                    self.tokens.unlink(missing_ok=True)
                raise Refused(response.status_code, self._refusal(response))
            for kind, data in sse_events(response.iter_lines()):
                if kind == "reconnect":
                    say("the gateway is restarting; reconnecting")
                    self.restarting = True
                    return Ending.RESTARTING
                self._on(kind, data)
        return Ending.ENDED

    def _refusal(self, response: httpx.Response) -> str:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        return f"the gateway refused the lease: {message} (HTTP {response.status_code})"

    def _on(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "registered":
            self.registration_id, self.restarting = data["registration_id"], False
            token = data.get("management_token")
            if token:
                keep_token(self.tokens, token)
                say(
                    f"your management token is kept in {self.tokens} (readable by you "
                    "only): with it this agent re-attaches the same registration after a "
                    "restart or a new endpoint URL, and you manage this server, and no "
                    "other, on its page or with --management-token. Keep it secret; lost, "
                    "the admin can issue a new one"
                )
            page = data.get("page") or f"/servers/{self.registration_id}"
            say(f"joined as {self.registration_id}; its page: {self.gateway}{page}")
        elif kind == "heartbeat":
            status = (data["health"], bool(data["draining"]), data.get("reason"))
            if status != self.status:
                self.status = status
                said = f"status: {status[0]}{' (draining)' if status[1] else ''}"
                if status[0] != "healthy" and status[2]:
                    said += f": {status[2]}"
                say(f"{said} (see {self.gateway}/servers/{self.registration_id})")
            self.acknowledge()
        elif kind == "ended":
            say(f"lease ended: {data.get('reason')}")

    def acknowledge(self) -> None:
        """Answer a heartbeat: only that renews the lease. A failed answer is not fatal
        (the stream tells what happened next)."""
        token = self._token()
        if self.registration_id is None or token is None:
            return
        try:
            httpx.post(
                f"{self.gateway}/admin/leases/{self.registration_id}/ack",
                headers={"X-Management-Token": token},
                timeout=10,
                trust_env=False,
            )
        except httpx.HTTPError as error:
            say(f"could not acknowledge a heartbeat ({type(error).__name__})", err=True)

    def drain(self) -> None:
        if self.registration_id is None or not self.tokens.exists():
            return
        try:
            httpx.post(
                f"{self.gateway}/admin/servers/{self.registration_id}/drain",
                headers={"X-Management-Token": self.tokens.read_text().strip()},
                timeout=10,
                trust_env=False,
            )
            say("drained; the lease ends now")
        except httpx.HTTPError as error:
            say(f"could not drain: {error}", err=True)


def run(agent: Agent) -> None:
    """Hold the lease, reconnecting with backoff, until Ctrl-C or SIGTERM."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    backoff = FIRST_BACKOFF
    try:
        while True:
            started = time.monotonic()
            try:
                if agent.hold() is Ending.RESTARTING:
                    backoff = FIRST_BACKOFF
                else:
                    say("the gateway ended the lease; reconnecting", err=True)
            except httpx.HTTPError as error:
                if not agent.restarting:  # a gateway that said it restarts is away a while
                    say(f"connection lost ({type(error).__name__}); reconnecting", err=True)
            except Refused as refusal:
                if refusal.status < 500:
                    raise click.ClickException(str(refusal)) from None
                say(f"{refusal}; retrying", err=True)
            if time.monotonic() - started > MAX_BACKOFF:
                backoff = FIRST_BACKOFF  # it held a while: start over
            time.sleep(backoff)
            backoff = next_backoff(backoff)
    except KeyboardInterrupt:
        agent.drain()


@click.command()
@click.option("--gateway", "gateway_url", default=default_gateway_url, help="The gateway's URL.")
@click.option("--endpoint", help="Your model server's URL as the gateway reaches it.")
@click.option("--model", help="Serve only this model (default: every model it lists).")
@click.option("--backend-key", envvar="BACKEND_API_KEY", help="Key the gateway sends to it.")
@click.option("--tag", "tags", multiple=True, help="Repeat for several tags.")
@click.option("--student-id", help="Who you are (the owner shown on the pages).")
@click.option("--description", help="A few words about the server (shown on the pages).")
@click.option("--notify-url", help="Where the gateway POSTs your server's health changes.")
@click.option("--notify-format", help="json (default), slack, discord or ntfy.")
@click.option("--weight", type=click.IntRange(1, 1000), help="Share under `weighted`.")
@click.option("--claim", is_flag=True, help="Own --model: no one else may serve that name.")
@click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="Tells apart two agents on this machine for the same gateway and model.",
)
@click.option(
    "--management-token",
    envvar="GATEWAY_MANAGEMENT_TOKEN",
    help="A token the admin issued you (POST /admin/servers/{id}/token): kept, and used "
    "to re-attach that registration.",
)
@click.option(
    "--key",
    envvar=["GATEWAY_REGISTRATION_KEY", "ADMIN_API_KEY"],
    help="A registration key (or the admin key) for the first join; later joins use "
    "the management token kept in your config folder.",
)
@click.option("--detect", is_flag=True, help="Look for model servers on this machine.")
def join(
    gateway_url: str,
    endpoint: str | None,
    model: str | None,
    backend_key: str | None,
    tags: tuple[str, ...],
    student_id: str | None,
    description: str | None,
    notify_url: str | None,
    notify_format: str | None,
    weight: int | None,
    claim: bool,
    name: str,
    management_token: str | None,
    key: str | None,
    detect: bool,
) -> None:
    """Hold your server in the gateway's pool while this runs (Ctrl-C drains and leaves)."""
    if detect:
        found = detect_servers()
        for url, found_name in found:
            click.echo(f"found {found_name} at {url}")
        if endpoint is None and found:
            endpoint = found[0][0]
    if endpoint is None:
        fail("give --endpoint (or --detect to look for a model server on this machine)")
        return
    if claim and not model:
        fail("--claim needs --model: the name to own")
    body = join_body(endpoint, model, backend_key, tags, student_id, description, notify_url)
    if weight is not None:
        body["weight"] = weight
    if notify_format:
        body["notify_format"] = notify_format
    if claim:
        body["claim"] = True
    tokens = token_file(gateway_url, model, name)
    legacy = legacy_token_file(gateway_url, endpoint, model)
    if management_token:
        keep_token(tokens, management_token.strip())
        say(f"kept the management token you gave in {tokens}")
    elif not tokens.exists() and legacy.exists():
        keep_token(tokens, legacy.read_text().strip())
        legacy.unlink()
    if not tokens.exists() and not key:
        fail("the first join needs --key (a registration key or the admin key)")
    run(Agent(gateway_url, key, body, tokens))


def join_body(
    endpoint: str,
    model: str | None,
    backend_key: str | None,
    tags: tuple[str, ...],
    student_id: str | None,
    description: str | None,
    notify_url: str | None,
) -> dict[str, Any]:
    """The lease's registration body: only what was given (a re-attach keeps the rest)."""
    body: dict[str, Any] = {"endpoint_url": endpoint, "tags": list(tags)}
    if model:
        body["model_name"] = model
    if backend_key:
        body["api_key"] = backend_key
    metadata = {
        field: value
        for field, value in (("student_id", student_id), ("description", description))
        if value is not None
    }
    if metadata:
        body["metadata"] = metadata
    if notify_url:
        body["notify_url"] = notify_url
    return body
