"""What several machines share: PostgreSQL's notifications and leader election, Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.cluster.redis_client import SharedRedis
    from shared.settings import Settings


def shared_redis(settings: Settings) -> SharedRedis | None:
    """This worker's Redis (REDIS_URL), or None. redis-py (the `cluster` extra) is
    imported only when REDIS_URL is set."""
    if not settings.redis_url:
        return None
    from shared.cluster.redis_client import FailureMode, SharedRedis

    return SharedRedis(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        mode=FailureMode(settings.redis_failure_mode),
    )
