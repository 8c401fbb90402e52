"""The outbox relay: PostgreSQL outbox -> RabbitMQ, with publisher confirms.

Each batch is claimed with ``FOR UPDATE SKIP LOCKED`` inside a transaction, published
(mandatory, persistent), and marked published only once the broker confirmed every message;
the transaction then commits. A relay that dies anywhere before the commit leaves its rows
unpublished for the next relay: at-least-once, and the consumers' inbox removes duplicates.
Relays wake on ``NOTIFY orderflow_outbox``, sent by the writers after they commit
(``outbox.wake_relays``), and poll as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractExchange

from orderflow.adapters.postgres import outbox
from orderflow.adapters.postgres.database import create_pool
from orderflow.adapters.rabbitmq.client import Backoff, connect_with_backoff, outbox_message
from orderflow.adapters.rabbitmq.topology import Names
from orderflow.entrypoints.runtime import (
    first_of,
    install_stop_signals,
    serve_metrics,
    settle_heap,
)
from orderflow.observability import metrics
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

UNROUTABLE_HOLD_S = 5.0  # how long a returned row waits before the relay tries it again


class BrokerLost(Exception):
    """The broker connection or channel closed under the relay."""


class Relay:
    """One relay process's loop; several may run against the same outbox."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.names = Names.from_settings(settings)
        self._wake = asyncio.Event()
        self._held: dict[int, float] = {}  # unroutable row id -> monotonic time to retry
        self._next_prune = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, reconnecting to the broker and the database as needed."""
        backoff = Backoff(self.settings.reconnect_max_backoff_s)
        async with self._listening(stop):
            while not stop.is_set():
                connection = await connect_with_backoff(
                    self.settings, name="orderflow-relay", stop=stop, backoff=backoff
                )
                if connection is None:
                    return
                try:
                    async with connection:
                        channel = await connection.channel(
                            publisher_confirms=True, on_return_raises=True
                        )
                        exchange = await channel.declare_exchange(
                            self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                        )
                        log.info("relay_connected", exchange=self.names.exchange)
                        backoff.reset()
                        await self._pump(
                            exchange, stop, functools.partial(_is_closed, connection, channel)
                        )
                except (BrokerLost, OSError, aio_pika.exceptions.AMQPError) as exc:
                    log.warning("relay_broker_lost", error=repr(exc))
                    await backoff.wait(stop)

    async def _pump(
        self, exchange: AbstractExchange, stop: asyncio.Event, closed: Callable[[], bool]
    ) -> None:
        db_backoff = Backoff(self.settings.reconnect_max_backoff_s)
        size = self.settings.relay_batch_size
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.relay_batch(exchange)
                await self._maybe_prune()
                db_backoff.reset()
            except Exception as exc:
                if closed():
                    raise BrokerLost(repr(exc)) from exc
                if isinstance(exc, aio_pika.exceptions.AMQPError):
                    raise
                log.warning("relay_batch_failed", error=repr(exc))
                await db_backoff.wait(stop)
                continue
            if sent < size:
                await self._sleep(stop)

    async def _sleep(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.relay_poll_interval_s):
                await first_of(self._wake.wait(), stop.wait())

    async def relay_batch(self, exchange: AbstractExchange) -> int:
        """Claim, publish and mark one batch; the number of rows claimed."""
        started = time.perf_counter()
        now = time.monotonic()
        self._held = {k: t for k, t in self._held.items() if t > now}
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await outbox.claim(
                conn, limit=self.settings.relay_batch_size, skip=list(self._held)
            )
            if not rows:
                return 0
            async with asyncio.timeout(self.settings.relay_publish_timeout_s):
                results = await asyncio.gather(
                    *(
                        exchange.publish(outbox_message(row), row.event_type, mandatory=True)
                        for row in rows
                    ),
                    return_exceptions=True,
                )
            confirmed: list[int] = []
            failure: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, aio_pika.exceptions.PublishError):
                    # Returned: no queue is bound for this type. An error, not a confirm.
                    metrics.EVENTS_UNROUTABLE.labels(row.event_type).inc()
                    log.error("relay_unroutable", event_type=row.event_type, event_id=row.event_id)
                    self._held[row.id] = now + UNROUTABLE_HOLD_S
                elif isinstance(result, BaseException):
                    failure = result
                else:
                    confirmed.append(row.id)
                    metrics.EVENTS_PUBLISHED.labels(row.event_type).inc()
            await self.mark_published(conn, confirmed)
        metrics.RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        if failure is not None:
            raise failure
        return len(rows)

    async def mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        """Mark confirmed rows (a seam: the crash tests stop the relay right here)."""
        await outbox.mark_published(conn, ids)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.outbox_prune_interval_s
        deleted = await outbox.prune(self.pool, older_than_s=self.settings.outbox_retention_s)
        if deleted:
            log.info("outbox_pruned", rows=deleted)

    @contextlib.asynccontextmanager
    async def _listening(self, stop: asyncio.Event) -> AsyncIterator[None]:
        """Keep a LISTEN connection open (re-opened when it drops) that sets the wake event."""

        def notified(*_: object) -> None:
            self._wake.set()

        async def keep_listening() -> None:
            backoff = Backoff(self.settings.reconnect_max_backoff_s)
            while not stop.is_set():
                try:
                    conn = await asyncpg.connect(self.settings.dsn(), timeout=5)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("relay_listen_failed", error=repr(exc))
                    await backoff.wait(stop)
                    continue
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_, lost=lost: lost.set())
                try:
                    await conn.add_listener(outbox.CHANNEL, notified)
                    backoff.reset()
                    self._wake.set()  # catch up on anything committed while not listening
                    await first_of(lost.wait(), stop.wait())
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("relay_listen_lost", error=repr(exc))
                finally:
                    conn.terminate()

        task = asyncio.create_task(keep_listening())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _is_closed(
    connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel
) -> bool:
    # A broker stopping may close the channel before the connection notices.
    return bool(connection.is_closed or channel.is_closed)


async def run_relay(settings: Settings, *, metrics_port: int | None = None) -> None:
    """The ``orderflow relay`` process: until SIGTERM or SIGINT."""
    serve_metrics(metrics_port)
    stop = install_stop_signals()
    pool = await create_pool(settings, min_size=1, max_size=4)
    settle_heap()
    try:
        await Relay(settings, pool).run(stop)
    finally:
        await pool.close()
    log.info("relay_stopped")
