"""`gateway-admin`: migrate the database, manage registrations, run a demo backend.

The registration commands talk to the admin API over HTTP (`--url`,
`--api-key`), so they work from any machine; the `db` commands work on
DATABASE_URL directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from gateway.cli.api_client import (
    KEYS,
    SERVERS,
    AdminClient,
    F,
    api_options,
    fail,
    print_document,
)
from gateway.cli.db_commands import db
from gateway.cli.join import join
from gateway.cli.keys import groups, keys
from gateway.cli.server_view import server_details, servers_table
from gateway.cli.stats_view import format_key_stats, format_stats


@click.group()
@click.version_option(package_name="multiverse-gateway")
def cli() -> None:
    """Administer a Multiverse Inference Gateway."""


cli.add_command(db)


# --- registrations -------------------------------------------------------


def _registration_body(
    *,
    model: str | None,
    backend_model: str | None,
    endpoint: str | None,
    backend_key: str | None,
    max_tokens: int | None,
    context_length: int | None,
    streaming: bool | None,
    student_id: str | None,
    description: str | None,
    tags: Sequence[str],
    priority: int | None,
    weight: int | None,
    max_concurrent: int | None,
    notify_url: str | None = None,
    notify_format: str | None = None,
    all_models: bool = False,
) -> dict[str, Any]:
    """The JSON body for register/update, with only the options that were given."""
    body: dict[str, Any] = {"model_name": None} if all_models else {}
    for key, value in (
        ("model_name", model),
        ("backend_model", backend_model),
        ("endpoint_url", endpoint),
        ("api_key", backend_key),
        ("priority", priority),
        ("weight", weight),
        ("max_concurrent", max_concurrent),
        ("notify_url", notify_url),
        ("notify_format", notify_format),
    ):
        if value is not None:
            body[key] = value
    if tags:
        body["tags"] = list(tags)
    capabilities = {
        key: value
        for key, value in (
            ("max_tokens", max_tokens),
            ("context_length", context_length),
            ("streaming", streaming),
        )
        if value is not None
    }
    if capabilities:
        body["capabilities"] = capabilities
    metadata = {
        key: value
        for key, value in (("student_id", student_id), ("description", description))
        if value is not None
    }
    if metadata:
        body["metadata"] = metadata
    return body


def registration_options(required: bool) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        options = [
            click.option(
                "--model",
                help="Serve only this model, by the name clients ask for "
                "(default: every model the backend lists, kept in sync).",
            ),
            click.option(
                "--backend-model",
                help="What the backend calls --model, if not the same (requests are renamed).",
            ),
            click.option(
                "--endpoint", required=required, help="Backend base URL, e.g. https://x.invalid"
            ),
            click.option(
                "--backend-key",
                envvar="BACKEND_API_KEY",
                help="Key the gateway sends to the backend (or BACKEND_API_KEY).",
            ),
            click.option("--max-tokens", type=click.IntRange(min=1)),
            click.option("--context-length", type=click.IntRange(min=1)),
            click.option("--streaming/--no-streaming", default=None),
            click.option("--student-id"),
            click.option("--description"),
            click.option("--tag", "tags", multiple=True, help="Repeat for several tags."),
            click.option("--priority", type=click.IntRange(0, 1000), help="Tier; 0 first."),
            click.option("--weight", type=click.IntRange(1, 1000)),
            click.option("--max-concurrent", type=click.IntRange(min=1)),
            click.option("--notify-url", help="healthd POSTs each health transition here."),
            click.option(
                "--notify-format", help="json (default), slack, discord or ntfy: the POSTs' shape."
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@cli.command()
@registration_options(required=True)
@api_options
def register(url: str, api_key: str | None, as_json: bool, **fields: Any) -> None:
    """Register a backend (the gateway probes it first)."""
    body = _registration_body(**_rename(fields))
    result = AdminClient(url, api_key).call("POST", "/admin/register", json=body)
    print_document(
        result,
        as_json,
        lambda r: (
            f"registered {r['registration_id']} ({r['health_status']})\n"
            f"management token (shown once; manages this registration): {r['management_token']}"
        ),
    )


def _rename(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "tags": fields.get("tags") or ()}


@cli.command()
@click.argument("registration_id")
@registration_options(required=False)
@click.option(
    "--all-models", is_flag=True, help="Serve every model the backend lists (clears --model)."
)
@api_options
def update(
    registration_id: str, url: str, api_key: str | None, as_json: bool, **fields: Any
) -> None:
    """Change fields of a registration (only the options given)."""
    if fields.get("all_models") and fields.get("model"):
        fail("--all-models and --model contradict each other: give one")
    body = _registration_body(**_rename(fields))
    if not body:
        fail("nothing to change: give at least one option (see --help)")
    client = AdminClient(url, api_key)
    registration_id = client.resolve(registration_id, SERVERS)
    result = client.call("PUT", f"/admin/register/{registration_id}", json=body)
    print_document(result, as_json, server_details)


@cli.command()
@click.argument("registration_id")
@api_options
def deregister(registration_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Deregister a backend (soft delete; it can register again)."""
    client = AdminClient(url, api_key)
    registration_id = client.resolve(registration_id, SERVERS)
    result = client.call("DELETE", f"/admin/register/{registration_id}")
    print_document(result, as_json, lambda r: f"deregistered {r['registration_id']}")


@cli.command()
@click.option("--model", help="Only this model.")
@click.option("--status", type=click.Choice(["healthy", "unhealthy", "unknown"]))
@click.option("--student-id", help="Only this owner.")
@click.option("--all", "include_inactive", is_flag=True, help="Include deregistered ones.")
@api_options
def servers(
    model: str | None,
    status: str | None,
    student_id: str | None,
    include_inactive: bool,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List registrations and their health."""
    params = {
        key: value
        for key, value in (("model", model), ("status", status), ("student_id", student_id))
        if value
    }
    if include_inactive:
        params["include_inactive"] = "true"
    client = AdminClient(url, api_key)
    result = client.call("GET", "/admin/servers", params=params)
    in_flight: dict[str, int] = {}
    if result and not as_json:
        # In flight is the workers' count (the statistics carry it), not the registry's.
        stats = client.call("GET", "/admin/stats", params={"window": "5m"})
        in_flight = {row["registration_id"]: row["in_flight"] for row in stats["backends"]}
    print_document(result, as_json, lambda rows: servers_table(rows, in_flight))


@cli.command()
@click.argument("registration_id")
@api_options
def show(registration_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show one registration with its last 20 health checks."""
    client = AdminClient(url, api_key)
    registration_id = client.resolve(registration_id, SERVERS)
    result = client.call("GET", f"/admin/servers/{registration_id}")
    print_document(result, as_json, server_details)


def _drain_command(action: str, done: str, summary: str) -> None:
    """`gateway-admin drain|undrain ID`: POST /admin/servers/ID/<action>."""

    @cli.command(action, help=summary)
    @click.argument("registration_id")
    @api_options
    def command(registration_id: str, url: str, api_key: str | None, as_json: bool) -> None:
        client = AdminClient(url, api_key)
        registration_id = client.resolve(registration_id, SERVERS)
        result = client.call("POST", f"/admin/servers/{registration_id}/{action}")
        print_document(result, as_json, lambda r: f"{done} {r['registration_id']}")


_drain_command("drain", "draining", "Drain a backend: no new requests, those in flight finish.")
_drain_command("undrain", "resumed", "Resume a drained backend.")


@cli.command()
@click.argument("registration_id")
@api_options
def check(registration_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Ask healthd to probe a backend now (see the result with `show`)."""
    client = AdminClient(url, api_key)
    registration_id = client.resolve(registration_id, SERVERS)
    result = client.call("POST", f"/admin/servers/{registration_id}/check")
    print_document(result, as_json, lambda r: f"check requested for {r['registration_id']}")


@cli.command()
@click.option("--window", type=click.Choice(["5m", "1h", "24h"]), default="1h", show_default=True)
@click.option(
    "--by",
    type=click.Choice(["pool", "key"]),
    default="pool",
    show_default=True,
    help="pool: per model, backend and owner; key: per client key.",
)
@click.option("--owner", help="Only this owner's servers and keys.")
@click.option("--key", "key_id", help="Only this client key (its id, or the start of it).")
@api_options
def stats(
    window: str,
    by: str,
    owner: str | None,
    key_id: str | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Pool statistics over a window: totals, per model, per backend, per owner; or per key."""
    client = AdminClient(url, api_key)
    if key_id:
        key_id = client.resolve(key_id, KEYS)
    params = {k: v for k, v in (("window", window), ("owner", owner), ("key", key_id)) if v}
    result = client.call("GET", "/admin/stats", params=params)
    print_document(result, as_json, format_key_stats if by == "key" else format_stats)


cli.add_command(join, "join")
cli.add_command(keys, "keys")
cli.add_command(groups, "groups")


# --- demo backend --------------------------------------------------------


@cli.command("demo-backend")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=9001, show_default=True)
@click.option("--model", default="demo", show_default=True, help="Model name to serve.")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0, show_default=True)
@click.option(
    "--chunk-interval-ms",
    type=click.FloatRange(min=0),
    default=20,
    show_default=True,
    help="Pause between streamed chunks.",
)
@click.option("--api-key", "backend_key", help="Require this Bearer token.")
@click.option(
    "--openai-only",
    is_flag=True,
    help="Speak only OpenAI's API (as vLLM without its Messages route): the gateway translates.",
)
def demo_backend(
    host: str,
    port: int,
    model: str,
    latency_ms: float,
    chunk_interval_ms: float,
    backend_key: str | None,
    openai_only: bool,
) -> None:
    """Run a small server that speaks every API the gateway routes (OpenAI's chat,
    completions, embeddings and Responses, Anthropic's Messages, Ollama's)."""
    import uvicorn

    from gateway.cli.demo_backend import create_demo_app

    app = create_demo_app(
        model,
        latency_ms=latency_ms,
        chunk_interval_ms=chunk_interval_ms,
        api_key=backend_key,
        openai_only=openai_only,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.command("run-local")
@click.option(
    "--demo-port",
    type=click.IntRange(1, 65535),
    envvar="DEMO_PORT",
    help="The demo backend's port (or DEMO_PORT: `PORT=18000 DEMO_PORT=18001 make run`); "
    "default: DEMO_PORT in .env, which a first run writes, else 9001.",
)
def run_local_command(demo_port: int | None) -> None:
    """Migrate, then run gateway, healthd and a demo backend until Ctrl-C (`make run`)."""
    from gateway.cli.run_local import run_local

    run_local(demo_port)


if __name__ == "__main__":
    cli()
