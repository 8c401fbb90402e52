"""The consumer runtime: RabbitMQ deliveries -> ``kernel.consumer`` -> ack, retry, delay or
dead letter.

One connection, one consuming channel per handler (bounded prefetch) and one confirming
channel for the messages the worker itself publishes (dead letters; retries and delays are
scheduled in PostgreSQL, ``kernel.settling``). The
connection is plain, not "robust": when it drops, the worker reconnects with back-off,
re-declares its topology and re-registers every consumer itself, so a broker restart never
leaves a silent worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from orderflow.domain.events import Envelope, UnknownEventType
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.batches import Batcher, Unsettled, Waiting, ack_batch
from orderflow.kernel.broker import connect_with_backoff, header_int
from orderflow.kernel.consumer import Outcome, Prepared, apply, apply_batch, prepare
from orderflow.kernel.handlers import CallStep, Delivery, Handler, Registry
from orderflow.kernel.process import first_of
from orderflow.kernel.settling import Settler
from orderflow.kernel.topology import ATTEMPT, HandlerQueues, Names, declare_topology
from orderflow.observability import metrics
from orderflow.observability.tracing import delivery_span, tracing_enabled
from orderflow.settings import Settings

log = structlog.get_logger("orderflow.kernel.worker")


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
        self.settler = Settler(settings, self.names, pool)
        self._batchers: dict[str, Batcher] = {}
        self.tracing = tracing_enabled()

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
        self.settler.publisher = publisher
        started: list[tuple[AbstractQueue, str]] = []
        for spec in self.registry:
            # A channel per handler: its delivery tags are that handler's alone, so a batch
            # can be acked by one frame (see Unsettled).
            consumer = await connection.channel(publisher_confirms=False)
            consumer.close_callbacks.add(lambda *_: lost.set())
            await consumer.set_qos(prefetch_count=self.settings.worker_prefetch)
            queues = self.names.handler(spec.name)
            queue = await consumer.declare_queue(queues.work, passive=True)
            unsettled = Unsettled(self.settings.worker_prefetch) if spec.batched else None
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
        self, spec: Handler, queues: HandlerQueues, unsettled: Unsettled | None
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
        spec: Handler,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        unsettled: Unsettled | None,
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
            await self.settler.dead_letter(spec, message, attempt, f"invalid envelope: {exc}")
            metrics.EVENTS_CONSUMED.labels(spec.name, "invalid").inc()
            return
        with structlog.contextvars.bound_contextvars(
            event_id=str(envelope.event_id),
            order_id=str(envelope.order_id) if envelope.order_id else None,
            correlation_id=str(envelope.correlation_id),
            handler=spec.name,
            attempt=attempt,
        ):
            if not self.tracing:
                await self._dispatch(spec, queues, message, delivery, unsettled)
                return
            traceparent = (message.headers or {}).get("traceparent")
            with delivery_span(spec.name, queues.work, envelope, attempt, traceparent):
                await self._dispatch(spec, queues, message, delivery, unsettled)

    async def _dispatch(
        self,
        spec: Handler,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        unsettled: Unsettled | None,
    ) -> None:
        """Apply a delivery alone, or hand it (its call answered) to its handler's batches."""
        if unsettled is None:
            await self._apply(spec, queues, message, delivery)
            return
        prepared = None
        if isinstance(spec, CallStep):
            prepared = await self._prepare(spec, queues, message, delivery)
            if prepared is None:
                return
        batcher = self._batchers.get(spec.name)
        if batcher is None:
            batcher = self._batchers[spec.name] = Batcher(self, spec, queues)
        await batcher.submit(Waiting(message, delivery, unsettled, prepared))

    async def _apply(
        self,
        spec: Handler,
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
            await self.settler.not_applied(spec, queues, message, delivery, exc)
            return
        finally:
            metrics.HANDLER_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(spec.name, outcome.value).inc()

    async def _prepare(
        self,
        spec: CallStep,
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
            await self.settler.not_applied(spec, queues, message, delivery, exc)
            return None
        if isinstance(ready, Outcome):
            await message.ack()
            metrics.EVENTS_CONSUMED.labels(spec.name, ready.value).inc()
            return None
        return ready

    async def apply_batch(self, spec: Handler, queues: HandlerQueues, batch: list[Waiting]) -> None:
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
                None
                if not isinstance(spec, CallStep)
                else [w.prepared or Prepared(None) for w in batch],
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
        await ack_batch(batch)
        for outcome in outcomes:
            metrics.EVENTS_CONSUMED.labels(spec.name, outcome.value).inc()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _observe_lag(spec: Handler, delivery: Delivery) -> None:
    metrics.EVENT_LAG_SECONDS.labels(spec.name).observe(
        max(0.0, time.time() - delivery.envelope.occurred_at.timestamp())
    )
