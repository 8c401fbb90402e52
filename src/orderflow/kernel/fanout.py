"""Live fan-out over Redis pub/sub: what one API replica learns, every replica hears.

Pub/sub is a doorbell with the news attached, never the record: a message published while a
subscriber is disconnected is lost to it, so subscribers check what they receive for gaps
and read PostgreSQL for what is missing (``ordering.streams``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.asyncio import Redis

from orderflow.kernel.backoff import Backoff
from orderflow.kernel.redis import RedisLink

log = structlog.get_logger(__name__)


async def publish(link: RedisLink, channel: str, message: bytes) -> bool:
    """Publish ``message`` on ``channel`` (a key of the link's prefix); False if Redis is
    unavailable (the subscribers' own reads of PostgreSQL cover it)."""
    if not link.available:
        return False
    try:
        await link.client.publish(link.key(channel), message)
    except Exception as exc:  # any Redis failure: degrade, never fail the caller
        link.failed("publish", exc)
        return False
    return True


async def subscribe(
    url: str,
    channel: str,
    on_message: Callable[[bytes], None],
    stop: asyncio.Event,
    *,
    on_connected: Callable[[], None] = lambda: None,
    connect_timeout_s: float = 1.0,
    max_backoff_s: float = 5.0,
) -> None:
    """Call ``on_message`` with every message on ``channel`` (a full key) until ``stop``,
    reconnecting with back-off; ``on_connected`` runs each time the subscription (re)starts,
    after which the caller should look for what it missed while disconnected."""
    backoff = Backoff(max_backoff_s)
    while not stop.is_set():
        # A client of its own, without a socket timeout: a subscription waits indefinitely.
        client = Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, health_check_interval=5
        )
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                backoff.reset()
                on_connected()
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and isinstance(message.get("data"), bytes):
                        on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down or restarting: back off and subscribe again
            log.warning("fanout_subscription_lost", channel=channel, error=repr(exc))
            await backoff.wait(stop)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
