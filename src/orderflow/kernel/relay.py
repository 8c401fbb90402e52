"""The outbox relay: PostgreSQL outbox -> RabbitMQ, with publisher confirms.

Each batch is claimed with ``FOR UPDATE SKIP LOCKED`` inside a transaction, published
(mandatory, persistent), and marked published only once the broker confirmed every message.
The transaction spans batches (a ``RelayWindow``, ADR 0013): a batch's marks travel with the next
claim, and the window commits every ``relay_commit_interval_s``. A relay that dies anywhere
before the commit leaves its window's rows unpublished for the next relay: at-least-once, and
the consumers' inbox removes duplicates. Relays wake on ``NOTIFY orderflow_outbox``, sent by
the writers after they commit (``outbox.wake_relays``), and poll as a fallback. Beside the
outbox, each relay publishes the retries and deferrals scheduled in PostgreSQL once they are
due (``kernel.scheduled_pump``, ADR 0028).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange

from orderflow.kernel import outbox
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.broker import BrokerLost, outbox_message, publish_until_stopped
from orderflow.kernel.duties import Duties
from orderflow.kernel.failures import is_transient
from orderflow.kernel.process import first_of
from orderflow.kernel.relay_window import RelayWindow
from orderflow.kernel.scheduled_pump import ScheduledPump
from orderflow.kernel.topology import Names
from orderflow.observability import metrics
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

UNROUTABLE_HOLD_S = 5.0  # how long a returned row waits before the relay tries it again


class Relay:
    """One relay process's loop; several may run against the same outbox.

    Three duties (``kernel.duties``): the LISTEN connection that wakes the relay
    (``relay_listener``), the loop that claims, publishes and marks (``relay_pump``), and the
    loop that publishes scheduled deliveries when due (``scheduled_pump``).
    """

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, *, duties: Duties | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.names = Names.from_settings(settings)
        self.duties = duties or Duties("relay")
        self._wake = asyncio.Event()
        self._scheduled_wake = asyncio.Event()  # the scheduled pump's: the same NOTIFY
        self._held: dict[int, float] = {}  # unroutable row id -> monotonic time to retry
        self._next_prune = 0.0
        self._window = RelayWindow(pool, settings.relay_commit_interval_s)
        self.connected = asyncio.Event()  # set while a broker channel is open (/readyz)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set: its duties, supervised; returns once stopped."""
        self.listen(stop)
        self.duties.supervise("relay_pump", lambda: self.pump(stop))
        scheduled = ScheduledPump(self.settings, self.pool, wake=self._scheduled_wake)
        self.duties.supervise("scheduled_pump", lambda: scheduled.run(stop))
        try:
            await stop.wait()
        finally:
            await self.duties.stop(grace_s=self.settings.relay_publish_timeout_s)

    def listen(self, stop: asyncio.Event) -> None:
        """Start the LISTEN duty: a connection (re-opened when it drops) that sets the wake
        event on every ``NOTIFY``."""
        self.duties.supervise("relay_listener", lambda: self._keep_listening(stop))

    async def pump(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, reconnecting to the broker and the database as needed."""

        async def session(channel: AbstractChannel, closed: Callable[[], bool]) -> None:
            exchange = await channel.declare_exchange(
                self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            log.info("relay_connected", exchange=self.names.exchange)
            self.connected.set()
            try:
                await self._pump(exchange, stop, closed)
            finally:
                self.connected.clear()

        await publish_until_stopped(self.settings, name="relay", stop=stop, session=session)

    async def _pump(
        self, exchange: AbstractExchange, stop: asyncio.Event, closed: Callable[[], bool]
    ) -> None:
        try:
            await self._pump_until(exchange, stop, closed)
        except BaseException:
            await self._window.abandon()
            raise
        try:
            await self._window.commit()
        except Exception as exc:  # the next relay publishes the window again
            log.warning("relay_final_commit_failed", error=repr(exc))

    async def _pump_until(
        self, exchange: AbstractExchange, stop: asyncio.Event, closed: Callable[[], bool]
    ) -> None:
        db_backoff = Backoff(self.settings.reconnect_max_backoff_s)
        size = self.settings.relay_batch_size
        window = self._window
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.relay_batch(exchange)
                if sent < size and window.claimed:
                    # Caught up: the pending marks wait for the next wake-up's claim, or
                    # for the commit when the window is due.
                    await self._sleep(stop, window.remaining())
                if window.remaining() == 0 or not window.claimed:
                    await window.commit()
                await self._maybe_prune()
                db_backoff.reset()
            except Exception as exc:
                await window.abandon()
                if closed():
                    raise BrokerLost(repr(exc)) from exc
                if isinstance(exc, aio_pika.exceptions.AMQPError):
                    raise
                log.warning("relay_batch_failed", error=repr(exc))
                await db_backoff.wait(stop)
                continue
            if sent < size and window.conn is None:
                await self._sleep(stop, self.settings.relay_poll_interval_s)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Until a wake-up, ``stop`` or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await first_of(self._wake.wait(), stop.wait())

    async def relay_batch(self, exchange: AbstractExchange) -> int:
        """Mark the batch before, claim and publish one batch; the number of rows claimed."""
        started = time.perf_counter()
        now = time.monotonic()
        self._held = {k: t for k, t in self._held.items() if t > now}
        window = self._window
        conn = await window.open()
        rows = await outbox.claim(
            conn, limit=self.settings.relay_batch_size, skip=list(self._held), mark=window.pending
        )
        window.pending = []
        window.claimed += len(rows)
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
        await self.confirmed(confirmed)
        metrics.RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        if failure is not None:
            await window.commit()  # keep what the broker confirmed
            raise failure
        return len(rows)

    async def confirmed(self, ids: list[int]) -> None:
        """The broker confirmed these rows: their marks go with the next statement.

        A seam: the crash tests stop the relay right here.
        """
        self._window.pending += ids

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.outbox_prune_interval_s
        deleted = await outbox.prune(self.pool, older_than_s=self.settings.outbox_retention_s)
        if deleted:
            log.info("outbox_pruned", rows=deleted)

    async def _keep_listening(self, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open until ``stop``; a transient failure (the session cut,
        the server restarting) is retried here, anything else escapes to the supervisor."""

        def notified(*_: object) -> None:
            self._wake.set()
            self._scheduled_wake.set()

        backoff = Backoff(self.settings.reconnect_max_backoff_s)
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self.settings.dsn(), timeout=5)
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, asyncpg.PostgresError):
                    raise
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
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, asyncpg.PostgresError):
                    raise
                log.warning("relay_listen_lost", error=repr(exc))
            finally:
                conn.terminate()
            self._wake.set()  # whatever was notified while the connection was down
