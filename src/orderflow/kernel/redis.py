"""One ``redis.asyncio`` pool per process, with short timeouts and a failure cool-down.

Redis is an accelerator here, never the record: every caller has a fallback, so a Redis
failure must cost a request at most one short timeout. After a failure the link reports
itself unavailable for ``cooldown_s``, so that a dead Redis is not retried on every request.
"""

from __future__ import annotations

import time

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orderflow.observability.metrics import REDIS_ERRORS
from orderflow.settings import Settings

log = structlog.get_logger(__name__)


class RedisLink:
    """The process's Redis client, its key prefix and whether Redis is worth trying now."""

    def __init__(self, client: Redis, *, prefix: str, cooldown_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self._cooldown = cooldown_s
        self._down_until = 0.0

    def key(self, *parts: str) -> str:
        """A namespaced key: ``<prefix>:<part>:<part>...``."""
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        """False during the cool-down after a failure."""
        return time.monotonic() >= self._down_until

    def failed(self, operation: str, exc: BaseException) -> None:
        """Record a failure: count it, log the first of a series, start the cool-down."""
        REDIS_ERRORS.labels(operation).inc()
        if self.available:
            log.warning("redis_unavailable", operation=operation, error=repr(exc))
        self._down_until = time.monotonic() + self._cooldown

    async def ping(self) -> bool:
        """One PING, bypassing the cool-down (for readiness)."""
        try:
            return bool(await self.client.ping())
        except Exception as exc:  # any failure means not reachable
            self.failed("ping", exc)
            return False

    async def close(self) -> None:
        """Close the pool's connections."""
        await self.client.aclose()


def create_redis(settings: Settings) -> RedisLink:
    """Build the pool (no connection is opened until first use); the caller closes it."""
    timeout = settings.redis_timeout_s
    pool = BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout=timeout,  # waiting for a free connection is bounded too
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # the callers fall back; retrying only adds latency
    )
    client = Redis(connection_pool=pool)
    return RedisLink(client, prefix=settings.redis_key_prefix, cooldown_s=settings.redis_cooldown_s)
