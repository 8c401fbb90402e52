"""The relay's duty that publishes scheduled deliveries (retries, deferrals) once they are due.

Every ``scheduled_poll_interval_s`` (at once again after a full batch, and when the relay's
LISTEN connection hears a wake-up: a worker that schedules a delivery due sooner than the next
poll sends one) it claims the due rows
of this deployment's queues with ``FOR UPDATE SKIP LOCKED``, publishes each to its work queue
through the default exchange (persistent, mandatory, with publisher confirms) and deletes the
confirmed ones in the same transaction. A relay that dies before that commit leaves the rows
to be published again: at-least-once, the inbox removes the copies (ADR 0028). A row whose
queue does not exist (the broker returned it) waits ``UNROUTABLE_HOLD_S`` and is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange

from orderflow.kernel import scheduled
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.broker import BrokerLost, persistent_message, publish_until_stopped
from orderflow.kernel.failures import is_transient
from orderflow.kernel.process import first_of
from orderflow.kernel.topology import Names
from orderflow.observability import metrics
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

UNROUTABLE_HOLD_S = 5.0


class ScheduledPump:
    """Publishes this deployment's due scheduled deliveries until stopped."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, *, wake: asyncio.Event | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.prefix = Names.from_settings(settings).queue_head
        self.wake = wake or asyncio.Event()  # set: look for due deliveries now

    async def run(self, stop: asyncio.Event) -> None:
        """Publish due deliveries until ``stop``, reconnecting to the broker as needed."""

        async def session(channel: AbstractChannel, closed: Callable[[], bool]) -> None:
            await self._pump(channel.default_exchange, stop, closed)

        await publish_until_stopped(
            self.settings, name="relay-scheduled", stop=stop, session=session
        )

    async def _pump(
        self, exchange: AbstractExchange, stop: asyncio.Event, closed: Callable[[], bool]
    ) -> None:
        db_backoff = Backoff(self.settings.reconnect_max_backoff_s)
        while not stop.is_set():
            self.wake.clear()
            try:
                claimed = await self.publish_due(exchange)
                db_backoff.reset()
            except Exception as exc:
                if closed():
                    raise BrokerLost(repr(exc)) from exc
                if isinstance(exc, aio_pika.exceptions.AMQPError) or not is_transient(exc):
                    raise  # AMQP: reconnect; anything else: the duty's supervisor
                log.warning("scheduled_batch_failed", error=repr(exc))
                await db_backoff.wait(stop)
                continue
            if claimed < self.settings.scheduled_batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.scheduled_poll_interval_s):
                        await first_of(stop.wait(), self.wake.wait())

    async def publish_due(self, exchange: AbstractExchange) -> int:
        """Claim, publish and delete one batch of due deliveries; how many were claimed."""
        failure: BaseException | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await scheduled.claim(
                conn, prefix=self.prefix, limit=self.settings.scheduled_batch_size
            )
            if not rows:
                return 0
            async with asyncio.timeout(self.settings.relay_publish_timeout_s):
                results = await asyncio.gather(
                    *(
                        exchange.publish(
                            persistent_message(row.delivery.message),
                            row.delivery.queue,
                            mandatory=True,
                        )
                        for row in rows
                    ),
                    return_exceptions=True,
                )
            confirmed: list[int] = []
            returned: list[int] = []
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, aio_pika.exceptions.PublishError):
                    returned.append(row.id)  # no such queue: an error, not a confirm
                    log.error(
                        "scheduled_unroutable",
                        queue=row.delivery.queue,
                        event_id=row.delivery.message.message_id,
                    )
                elif isinstance(result, BaseException):
                    failure = result
                else:
                    confirmed.append(row.id)
                    metrics.SCHEDULED_PUBLISHED.labels(row.delivery.reason).inc()
            await scheduled.delete(conn, confirmed)
            await scheduled.postpone(conn, returned, seconds=UNROUTABLE_HOLD_S)
        log.debug("scheduled_published", published=len(confirmed), returned=len(returned))
        if failure is not None:
            raise failure  # after the commit: what the broker confirmed stays done
        return len(rows)
