"""A cheap, cached broker health check for ``/readyz``.

One connection is kept for the whole process (no channel at all): a check costs nothing while
it is open, and at most one reconnection attempt per ``ttl_s`` while the broker is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection


class BrokerProbe:
    """Answers "is the broker reachable?", remembering the answer for ``ttl_s`` seconds."""

    def __init__(self, url: str, *, ttl_s: float = 2.0, timeout_s: float = 1.0) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._result = "unknown"

    async def check(self) -> str:
        """``"ok"`` or ``"down: <reason>"``."""
        if time.monotonic() - self._checked_at < self._ttl_s:
            return self._result
        async with self._lock:  # one probe at a time; the others reuse its answer
            if time.monotonic() - self._checked_at >= self._ttl_s:
                self._result = await self._probe()
                self._checked_at = time.monotonic()
        return self._result

    async def _probe(self) -> str:
        if self._connection is not None and not self._connection.is_closed:
            return "ok"
        try:
            self._connection = await aio_pika.connect(
                self._url,
                timeout=self._timeout_s,
                client_properties={"connection_name": "orderflow-api-readyz"},
            )
        except Exception as exc:  # any failure means not ready
            return f"down: {type(exc).__name__}"
        return "ok"

    async def queue_depth(self, queue: str) -> int | None:
        """Ready messages in ``queue`` (a passive declare on the kept connection), or None
        when the broker or the queue cannot be reached right now."""
        found = (await self.queue_stats([queue])).get(queue)
        return None if found is None else found[0]

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, tuple[int, int] | None]:
        """(ready messages, consumers) per queue by passive declares on one channel; None for
        a queue that does not exist or when the broker cannot be reached."""
        stats: dict[str, tuple[int, int] | None] = dict.fromkeys(queues)
        if not queues or await self.check() != "ok" or self._connection is None:
            return stats
        channel = None
        try:
            async with asyncio.timeout(self._timeout_s * max(1, len(queues) / 10)):
                for queue in queues:
                    if channel is None or channel.is_closed:
                        channel = await self._connection.channel(publisher_confirms=False)
                    try:
                        declared = await channel.declare_queue(queue, passive=True)
                    except aio_pika.exceptions.ChannelClosed:
                        continue  # no such queue: it closed the channel; the next opens one
                    result = declared.declaration_result
                    stats[queue] = (result.message_count or 0, result.consumer_count or 0)
        except Exception:  # noqa: S110 - a dead broker times out: what was read stands
            pass
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
        return stats

    async def close(self) -> None:
        """Close the kept connection."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
