"""LISTEN on a PostgreSQL channel: wake a waiter when another instance changed something.

The registry's triggers (migration 0014) send `NOTIFY registry_changed` with each
committed change, so every gateway instance reloads within milliseconds instead
of waiting for its next generation poll. The poll stays: a notification is a
hint, never the only way a change arrives (a connection lost and re-made misses
the ones sent meanwhile, so each (re)connect wakes the waiter once too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
from sqlalchemy import make_url

from shared.logging import get_logger

REGISTRY_CHANNEL = "registry_changed"
RECONNECT_SECONDS = 1.0

log = get_logger("registry")


def libpq_url(url: str) -> str:
    """A SQLAlchemy `postgresql+psycopg://` URL as psycopg's own connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    url: str,
    on_notify: Callable[[], None],
    *,
    channel: str = REGISTRY_CHANNEL,
    reconnect_seconds: float = RECONNECT_SECONDS,
) -> None:
    """Until cancelled: call `on_notify` at each notification on `channel`, and once
    at each (re)connect. A lost connection is logged once and made again."""
    failing = False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(url), autocommit=True, connect_timeout=5
            ) as connection:
                await connection.execute(f"LISTEN {channel}")
                if failing:
                    log.info("listening for registry changes again", channel=channel)
                failing = False
                on_notify()
                async for _ in connection.notifies():
                    on_notify()
        except psycopg.Error as error:
            if not failing:
                log.warning(
                    "not listening for registry changes; polling only",
                    channel=channel,
                    error_type=type(error).__name__,
                )
            failing = True
        await asyncio.sleep(reconnect_seconds)
