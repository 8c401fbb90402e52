"""The consumer runtime: RabbitMQ deliveries -> ``service.consumer.apply`` -> ack, retry,
delay or dead letter.

One connection, one consuming channel (bounded prefetch) and one confirming channel for the
messages the worker itself publishes (retries, delays, dead letters). The connection is plain,
not "robust": when it drops, the worker reconnects with back-off, re-declares its topology and
re-registers every consumer itself, so a broker restart never leaves a silent worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

import aio_pika
import asyncpg
import httpx
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.events import Envelope, UnknownEventType
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.kernel import outbox
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.batching import Coalescer
from orderflow.kernel.broker import connect, connect_with_backoff, copy_message, header_int
from orderflow.kernel.consumer import Outcome, Prepared, apply, apply_batch, prepare
from orderflow.kernel.database import create_pool
from orderflow.kernel.duties import Duties
from orderflow.kernel.failures import is_transient
from orderflow.kernel.handlers import Defer, Delivery, HandlerSpec, PermanentError, Registry
from orderflow.kernel.process import first_of, install_stop_signals, serve_metrics, settle_heap
from orderflow.kernel.redis import create_redis
from orderflow.kernel.topology import (
    ATTEMPT,
    ERROR,
    FAILED,
    FIRST_FAILED,
    HANDLER,
    ROUTING_KEY,
    HandlerQueues,
    Names,
    declare_topology,
)
from orderflow.notifications import webhooks
from orderflow.observability import metrics
from orderflow.operations.reconcile import reconcile
from orderflow.operations.sla import mark_overdue
from orderflow.operations.watch import audit_invariants, every, watch_system
from orderflow.ordering.expiry import expire_unpaid
from orderflow.settings import Settings

log = structlog.get_logger(__name__)


class Worker:
    """Consumes the work queues of the handlers in ``registry`` until stopped."""

    def __init__(self, settings: Settings, registry: Registry, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        self.names = Names.from_settings(settings)
        self.connected = asyncio.Event()  # set while every consumer is registered
        # What may touch the database at once: a delivery of a plain handler, a whole batch
        # of a batch handler (its waiting deliveries hold none, so that a backlog of one
        # batch handler never keeps the other handlers' deliveries waiting for a slot).
        self.slots = asyncio.Semaphore(settings.worker_concurrency)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._publisher: AbstractChannel | None = None
        self._batchers: dict[str, _Batcher] = {}

    def bindings(self) -> dict[str, list[str]]:
        """Handler name -> the event types its queue is bound to."""
        return {spec.name: list(spec.event_types) for spec in self.registry}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; then finish (or hand back) what is in flight and return."""
        backoff = Backoff(self.settings.reconnect_max_backoff_s)
        while not stop.is_set():
            connection = await connect_with_backoff(
                self.settings, name="orderflow-worker", stop=stop, backoff=backoff
            )
            if connection is None:
                return
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
            try:
                queues = await self._start(connection, lost)
                backoff.reset()
                await first_of(lost.wait(), stop.wait())
                if stop.is_set():
                    await self._drain(queues)
            except (OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                log.warning("worker_broker_lost", error=repr(exc))
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
            if not stop.is_set():
                await backoff.wait(stop)

    async def _start(
        self, connection: aio_pika.abc.AbstractConnection, lost: asyncio.Event
    ) -> list[tuple[AbstractQueue, str]]:
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(
            publisher, self.names, self.bindings(), delivery_limit=self.settings.delivery_limit
        )
        publisher.close_callbacks.add(lambda *_: lost.set())
        self._publisher = publisher
        started: list[tuple[AbstractQueue, str]] = []
        for spec in self.registry:
            # A channel per handler: its delivery tags are that handler's alone, so a batch
            # can be acked by one frame (see _Unsettled).
            consumer = await connection.channel(publisher_confirms=False)
            consumer.close_callbacks.add(lambda *_: lost.set())
            await consumer.set_qos(prefetch_count=self.settings.worker_prefetch)
            queues = self.names.handler(spec.name)
            queue = await consumer.declare_queue(queues.work, passive=True)
            unsettled = _Unsettled(self.settings.worker_prefetch) if spec.batch else None
            tag = await queue.consume(self._callback(spec, queues, unsettled))
            started.append((queue, tag))
        self.connected.set()
        log.info("worker_consuming", handlers=self.registry.names)
        return started

    async def _drain(self, queues: list[tuple[AbstractQueue, str]]) -> None:
        """Stop consuming, then wait (bounded) for in-flight deliveries to finish."""
        self._stopping = True
        for queue, tag in queues:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.worker_shutdown_timeout_s):
                await self._idle.wait()
        # Whatever is still unacked returns to its queue when the connection closes.

    def _callback(
        self, spec: HandlerSpec, queues: HandlerQueues, unsettled: _Unsettled | None
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            if unsettled is not None:
                unsettled.add(message)
            self._in_flight += 1
            self._idle.clear()
            try:
                # A batch handler's delivery waits for its batch, which takes one slot.
                async with self.slots if unsettled is None else contextlib.nullcontext():
                    if self._stopping:
                        await message.nack(requeue=True)
                        return
                    await self._handle(spec, queues, message, unsettled)
            except Exception as exc:  # the broker will redeliver; never crash the worker
                log.warning("delivery_not_settled", handler=spec.name, error=repr(exc))
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

        return on_message

    async def _handle(
        self,
        spec: HandlerSpec,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        unsettled: _Unsettled | None,
    ) -> None:
        attempt = header_int(message, ATTEMPT, 1)
        try:
            envelope = Envelope.model_validate_json(message.body)
            delivery = Delivery(
                envelope=envelope,
                event=envelope.event(),
                attempt=attempt,
                redelivered=bool(message.redelivered),
            )
        except (ValidationError, UnknownEventType, ValueError) as exc:
            # Nothing in it can be trusted: the broker's ids say which message it was.
            log.error(
                "delivery_dead_lettered",
                handler=spec.name,
                reason="invalid_envelope",
                error=str(exc)[:500],
                message_id=message.message_id,
                routing_key=message.routing_key,
                attempt=attempt,
            )
            await self._dead_letter(spec, message, attempt, f"invalid envelope: {exc}")
            metrics.EVENTS_CONSUMED.labels(spec.name, "invalid").inc()
            return
        with structlog.contextvars.bound_contextvars(
            event_id=str(envelope.event_id),
            order_id=str(envelope.order_id) if envelope.order_id else None,
            correlation_id=str(envelope.correlation_id),
            handler=spec.name,
            attempt=attempt,
        ):
            if unsettled is None:
                await self._apply(spec, queues, message, delivery)
                return
            prepared = None
            if spec.prepare is not None:
                prepared = await self._prepare(spec, queues, message, delivery)
                if prepared is None:
                    return
            batcher = self._batchers.get(spec.name)
            if batcher is None:
                batcher = self._batchers[spec.name] = _Batcher(self, spec, queues)
            await batcher.submit(_Waiting(message, delivery, unsettled, prepared))

    async def _apply(
        self,
        spec: HandlerSpec,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        prepared: Prepared | None = None,
    ) -> None:
        started = time.perf_counter()
        _observe_lag(spec, delivery)
        try:
            outcome = await apply(self.pool, spec, delivery, prepared)
        except Exception as exc:
            await self._not_applied(spec, queues, message, delivery, exc)
            return
        finally:
            metrics.HANDLER_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(spec.name, outcome.value).inc()

    async def _prepare(
        self,
        spec: HandlerSpec,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        delivery: Delivery,
    ) -> Prepared | None:
        """A batch handler's ``prepare`` for one delivery, in a slot of its own; None when
        that settled the delivery (a duplicate, nothing to do, a failure)."""
        try:
            async with self.slots:
                ready = await prepare(self.pool, spec, delivery)
        except Exception as exc:
            await self._not_applied(spec, queues, message, delivery, exc)
            return None
        if isinstance(ready, Outcome):
            await message.ack()
            metrics.EVENTS_CONSUMED.labels(spec.name, ready.value).inc()
            return None
        return ready

    async def _not_applied(
        self,
        spec: HandlerSpec,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        exc: Exception,
    ) -> None:
        """Defer, retry or dead-letter a delivery whose handler raised ``exc``."""
        if not isinstance(exc, Defer):
            await self._failed(spec, queues, message, delivery.attempt, exc)
            return
        await self._publish(
            copy_message(message, headers={}, expiration_s=exc.delay_s or None),
            queues.delay if exc.delay_s > 0 else queues.work,
        )
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(spec.name, "deferred").inc()

    async def apply_batch(
        self, spec: HandlerSpec, queues: HandlerQueues, batch: list[_Waiting]
    ) -> None:
        """Apply a batch in one transaction and ack it; if that fails, one delivery at a time
        (so that only the failing message is retried or dead-lettered)."""
        started = time.perf_counter()
        for waiting in batch:
            _observe_lag(spec, waiting.delivery)
        try:
            outcomes = await apply_batch(
                self.pool,
                spec,
                [w.delivery for w in batch],
                None if spec.prepare is None else [w.prepared or Prepared(None) for w in batch],
            )
        except Exception as exc:
            log.info("batch_failed_applying_one_by_one", size=len(batch), error=repr(exc))
            for waiting in batch:
                with structlog.contextvars.bound_contextvars(
                    event_id=str(waiting.delivery.envelope.event_id)
                ):
                    await self._apply(
                        spec, queues, waiting.message, waiting.delivery, waiting.prepared
                    )
            return
        finally:
            metrics.HANDLER_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(spec.name).observe(len(batch))
        await _ack_batch(batch)
        for outcome in outcomes:
            metrics.EVENTS_CONSUMED.labels(spec.name, outcome.value).inc()

    async def _failed(
        self,
        spec: HandlerSpec,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        attempt: int,
        exc: Exception,
    ) -> None:
        transient = is_transient(exc)
        if transient and attempt < self.settings.retry_max_attempts:
            log.warning("delivery_retrying", error=repr(exc))
            first = header_int(message, FIRST_FAILED, 0) or _now_ms()
            await self._publish(
                copy_message(message, headers={ATTEMPT: attempt + 1, FIRST_FAILED: first}),
                queues.retry_for(attempt),
            )
            await message.ack()
            metrics.EVENTS_RETRIED.labels(spec.name).inc()
            metrics.EVENTS_CONSUMED.labels(spec.name, "retried").inc()
            return
        why = "attempts exhausted: " if transient else ""
        # A traceback only for the unexpected (bugs), not for a handler's deliberate refusal.
        expected = transient or isinstance(exc, PermanentError)
        log.error(
            "delivery_dead_lettered",
            reason="attempts_exhausted" if transient else "refused",
            error=repr(exc),
            exc_info=not expected,
        )
        await self._dead_letter(spec, message, attempt, f"{why}{type(exc).__name__}: {exc}")
        metrics.EVENTS_CONSUMED.labels(spec.name, "dead_lettered").inc()

    async def _dead_letter(
        self, spec: HandlerSpec, message: AbstractIncomingMessage, attempt: int, error: str
    ) -> None:
        """Keep the message with its handler, error and attempt count, then ack it."""
        now = _now_ms()
        headers = {
            HANDLER: spec.name,
            ERROR: error[:2000],
            ATTEMPT: attempt,
            ROUTING_KEY: message.type or message.routing_key or "",
            FIRST_FAILED: header_int(message, FIRST_FAILED, 0) or now,
            FAILED: now,
        }
        copy = copy_message(message, headers=headers, keep_broker_headers=True)
        await self._publish(copy, self.names.dead_letters)
        await message.ack()
        metrics.EVENTS_DEAD_LETTERED.labels(spec.name).inc()

    async def _publish(self, message: aio_pika.Message, queue: str) -> None:
        """Publish to ``queue`` through the default exchange and wait for the confirm."""
        if self._publisher is None:
            raise RuntimeError("worker is not connected")
        await self._publisher.default_exchange.publish(message, queue, mandatory=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _observe_lag(spec: HandlerSpec, delivery: Delivery) -> None:
    metrics.EVENT_LAG_SECONDS.labels(spec.name).observe(
        max(0.0, time.time() - delivery.envelope.occurred_at.timestamp())
    )


class _Unsettled:
    """The deliveries of one batch handler's channel that may still be unacked, by tag.

    A batch is acked by one ``basic.ack`` with ``multiple`` (it acks every tag up to the
    batch's highest) only when no other delivery at or below that tag is still unsettled:
    a message whose dead-letter copy is still unconfirmed, or that failed to settle, must
    never be acked on its behalf. Otherwise each is acked on its own.
    """

    def __init__(self, prefetch: int) -> None:
        self._by_tag: dict[int, AbstractIncomingMessage] = {}
        self._prune_above = 4 * prefetch

    def add(self, message: AbstractIncomingMessage) -> None:
        """A delivery arrived on the channel."""
        if message.delivery_tag is not None:
            self._by_tag[message.delivery_tag] = message
        if len(self._by_tag) > self._prune_above:
            self._prune()

    def _prune(self) -> None:
        for tag in [t for t, m in self._by_tag.items() if m.processed]:
            del self._by_tag[tag]

    async def ack(self, messages: list[AbstractIncomingMessage]) -> None:
        """Ack these deliveries: with one frame when that acks nothing else."""
        self._prune()
        by_tag = {m.delivery_tag: m for m in messages if m.delivery_tag is not None}
        if len(by_tag) != len(messages) or not acks_only(by_tag.keys(), self._by_tag):
            for message in messages:
                await message.ack()
            return
        await by_tag[max(by_tag)].ack(multiple=True)
        for tag in by_tag:
            self._by_tag.pop(tag, None)


def acks_only(batch: Collection[int], unsettled: Iterable[int]) -> bool:
    """Whether one ``basic.ack`` with ``multiple`` for the highest tag of ``batch`` acks
    exactly ``batch``, given the channel's ``unsettled`` tags (a single tag: ack it plainly)."""
    if len(batch) < 2:
        return False
    highest = max(batch)
    return all(tag > highest or tag in batch for tag in unsettled)


async def _ack_batch(batch: list[_Waiting]) -> None:
    """Ack an applied batch; one frame when its channel allows it."""
    unsettled = batch[0].unsettled
    if all(w.unsettled is unsettled for w in batch):
        await unsettled.ack([w.message for w in batch])
        return
    for waiting in batch:  # a reconnection mixed channels: the old ones are gone anyway
        await waiting.message.ack()


@dataclass(frozen=True, slots=True)
class _Waiting:
    message: AbstractIncomingMessage
    delivery: Delivery
    unsettled: _Unsettled
    prepared: Prepared | None = None  # what the handler's prepare step gave this delivery


class _Batcher:
    """Groups one batch handler's deliveries by natural batching (``service.batching``): one
    batch in flight at a time, and whatever arrives meanwhile forms the next one (up to
    ``worker_batch_max``). An idle handler applies a delivery at once; a busy one commits many
    per transaction. One batch at a time also means two batches of one handler never wait on
    each other's row locks. A window > 0 (the handler's ``batch_window_s``, else
    ``worker_batch_window_s``) lingers for a fuller batch."""

    def __init__(self, worker: Worker, spec: HandlerSpec, queues: HandlerQueues) -> None:
        self.worker = worker
        self.spec = spec
        self.queues = queues
        self._coalescer: Coalescer[_Waiting, None] = Coalescer(
            self._apply,
            max_batch=worker.settings.worker_batch_max,
            window_s=(
                worker.settings.worker_batch_window_s
                if spec.batch_window_s is None
                else spec.batch_window_s
            ),
        )

    async def submit(self, waiting: _Waiting) -> None:
        """Add a delivery to the open batch and wait until its batch has been handled."""
        await self._coalescer.submit(waiting)

    async def _apply(self, batch: list[_Waiting]) -> list[None]:
        try:
            with structlog.contextvars.bound_contextvars(handler=self.spec.name):
                async with self.worker.slots:
                    await self.worker.apply_batch(self.spec, self.queues, batch)
        except Exception as exc:  # the broker will redeliver what was not acked
            log.warning("batch_not_settled", handler=self.spec.name, error=repr(exc))
        return [None] * len(batch)


async def run_worker(
    settings: Settings,
    *,
    handlers: list[str] | None = None,
    metrics_port: int | None = None,
) -> None:
    """The ``orderflow worker`` process: the saga handlers, until SIGTERM or SIGINT.

    Its duties (the consumers, the unpaid-order sweeper) are supervised (``service.duties``):
    restarted after any failure, and reported on ``/healthz`` of the metrics port.
    """
    duties = Duties("worker")
    serve_metrics(metrics_port, process="worker", health=duties.health)
    stop = install_stop_signals()
    pool = await create_pool(settings, process="worker")
    redis = create_redis(settings)
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
    try:
        cache = RedisProductCache(redis, ttl_s=settings.product_cache_ttl_s)
        deps = Deps(settings=settings, pool=pool, cache=cache)
        if settings.notification_webhook_url is not None:
            await webhooks.adopt_notification_url(
                pool, settings.notification_webhook_url.get_secret_value()
            )
        registry = build_registry(deps).select(handlers)
        if not registry.names:
            log.warning("worker_without_handlers")
        start_counters_at_zero(registry.names)
        worker = Worker(settings, registry, pool)
        duties.supervise("consumers", lambda: worker.run(stop))
        duties.supervise("unpaid_order_sweeper", lambda: sweep_unpaid_orders(settings, pool, stop))
        duties.supervise("sla_watch", lambda: watch_sla(settings, pool, stop))
        duties.supervise("reconciler", lambda: reconcile_stuck_orders(settings, pool, stop))
        duties.supervise("webhook_deliveries", lambda: deliver_webhooks(settings, pool, http, stop))
        duties.supervise("system_watch", lambda: watch_system(settings, pool, stop))
        duties.supervise("invariant_audit", lambda: audit_invariants(settings, pool, stop))
        settle_heap()
        try:
            await stop.wait()
        finally:
            stop.set()
            # The consumers drain what is in flight once ``stop`` is set; then the rest goes.
            await duties.stop(grace_s=settings.worker_shutdown_timeout_s + 2)
    finally:
        await pool.close()
        await redis.close()
        await http.aclose()
    log.info("worker_stopped")


async def deliver_webhooks(
    settings: Settings, pool: asyncpg.Pool, http: httpx.AsyncClient, stop: asyncio.Event
) -> None:
    """The webhook duty: deliveries made from the order feed, attempted until accepted, woken
    by every commit of events (docs/webhooks.md). Every worker runs it; the feed cursor and
    the deliveries' leases keep them from doing the same work twice."""
    wake = asyncio.Event()
    policy = webhooks.Policy(
        timeout_s=settings.webhook_timeout_s,
        retry_base_s=settings.webhook_retry_base_s,
        retry_max_s=settings.webhook_retry_max_s,
        disable_after=settings.webhook_disable_after,
    )
    listener = asyncio.create_task(
        outbox.listen_for_commits(
            settings.dsn(), wake.set, stop, max_backoff_s=settings.reconnect_max_backoff_s
        )
    )
    try:
        await webhooks.run_deliveries(
            pool, http, policy, stop, wake=wake, poll_interval_s=settings.webhook_poll_interval_s
        )
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


# Every outcome a delivery is counted under (orderflow_events_consumed_total{outcome}).
OUTCOMES: tuple[str, ...] = (
    *(o.value for o in Outcome),
    "invalid",
    "deferred",
    "retried",
    "dead_lettered",
)


def start_counters_at_zero(handlers: Iterable[str]) -> None:
    """Every handler's delivery counters exist from the start, at 0: the first retry or dead
    letter is then an increase that ``rate()`` and ``increase()`` see."""
    names = list(handlers)
    metrics.start_at_zero(metrics.EVENTS_CONSUMED, names, OUTCOMES)
    metrics.start_at_zero(metrics.EVENTS_RETRIED, names)
    metrics.start_at_zero(metrics.EVENTS_DEAD_LETTERED, names)
    metrics.start_at_zero(metrics.WEBHOOK_ATTEMPTS, ("delivered", "pending", "refused"))


async def sweep_unpaid_orders(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Cancel orders left unpaid past their TTL, every few seconds, until ``stop``.

    Every worker sweeps; ``SKIP LOCKED`` keeps them from cancelling the same order twice.
    """

    async def sweep() -> None:
        expired = await expire_unpaid(pool, ttl_s=settings.unpaid_order_ttl_s)
        if expired:
            log.info("unpaid_orders_expired", count=expired)

    await every(settings.expiry_sweep_interval_s, sweep, stop=stop, duty="expiry_sweep")


async def watch_sla(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Mark the orders past their status's SLA deadline and export how many, until ``stop``.

    Every worker watches (the sweep is idempotent); each exports the same figure.
    """
    deadlines = settings.sla_deadlines_s

    async def sweep() -> None:
        counts = await mark_overdue(pool, deadlines=deadlines)
        for status, count in counts.items():
            metrics.ORDERS_OVERDUE.labels(status).set(count)

    await every(settings.sla_watch_interval_s, sweep, stop=stop, duty="sla_watch")


async def reconcile_stuck_orders(
    settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event
) -> None:
    """Re-drive orders that made no progress for longer than their step allows, every
    ``reconcile_interval_s``, until ``stop`` (``service.reconcile``).

    Every worker reconciles; a re-drive marks the event it sends again, so the others leave
    that order alone until its allowance has passed once more.
    """

    async def sweep() -> None:
        redriven = await reconcile(pool, settings)
        if redriven:
            log.warning("stuck_orders_redriven", count=len(redriven))

    await every(settings.reconcile_interval_s, sweep, stop=stop, duty="reconcile")


async def declare_saga_topology(settings: Settings) -> list[str]:
    """Declare the exchange and every saga handler's queues (``orderflow migrate``)."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        registry = build_registry(Deps(settings=settings, pool=pool))
    finally:
        await pool.close()
    connection = await connect(settings, name="orderflow-migrate")
    async with connection:
        channel = await connection.channel()
        bindings = {spec.name: list(spec.event_types) for spec in registry}
        names = Names.from_settings(settings)
        await declare_topology(channel, names, bindings, delivery_limit=settings.delivery_limit)
    return registry.names
