"""Settling a delivery its handler did not apply: defer it, retry it later or keep it as a
dead letter, each copy published with a confirm before the original is acked."""

from __future__ import annotations

import time

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from orderflow.kernel.broker import copy_message, header_int
from orderflow.kernel.failures import is_transient
from orderflow.kernel.handlers import Defer, Delivery, Handler, PermanentError
from orderflow.kernel.topology import (
    ATTEMPT,
    ERROR,
    FAILED,
    FIRST_FAILED,
    HANDLER,
    ROUTING_KEY,
    HandlerQueues,
    Names,
)
from orderflow.observability import metrics
from orderflow.settings import Settings

log = structlog.get_logger("orderflow.kernel.worker")


class Settler:
    """Publishes the retry, delay and dead-letter copies of a worker's deliveries."""

    def __init__(self, settings: Settings, names: Names) -> None:
        self.settings = settings
        self.names = names
        self.publisher: AbstractChannel | None = None  # the worker's confirming channel

    async def not_applied(
        self,
        spec: Handler,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        exc: Exception,
    ) -> None:
        """Defer, retry or dead-letter a delivery whose handler raised ``exc``."""
        if not isinstance(exc, Defer):
            await self.failed(spec, queues, message, delivery.attempt, exc)
            return
        await self.publish(
            copy_message(message, headers={}, expiration_s=exc.delay_s or None),
            queues.delay if exc.delay_s > 0 else queues.work,
        )
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(spec.name, "deferred").inc()

    async def failed(
        self,
        spec: Handler,
        queues: HandlerQueues,
        message: AbstractIncomingMessage,
        attempt: int,
        exc: Exception,
    ) -> None:
        transient = is_transient(exc)
        if transient and attempt < self.settings.retry_max_attempts:
            log.warning("delivery_retrying", error=repr(exc))
            first = header_int(message, FIRST_FAILED, 0) or now_ms()
            await self.publish(
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
        await self.dead_letter(spec, message, attempt, f"{why}{type(exc).__name__}: {exc}")
        metrics.EVENTS_CONSUMED.labels(spec.name, "dead_lettered").inc()

    async def dead_letter(
        self, spec: Handler, message: AbstractIncomingMessage, attempt: int, error: str
    ) -> None:
        """Keep the message with its handler, error and attempt count, then ack it."""
        now = now_ms()
        headers = {
            HANDLER: spec.name,
            ERROR: error[:2000],
            ATTEMPT: attempt,
            ROUTING_KEY: message.type or message.routing_key or "",
            FIRST_FAILED: header_int(message, FIRST_FAILED, 0) or now,
            FAILED: now,
        }
        copy = copy_message(message, headers=headers, keep_broker_headers=True)
        await self.publish(copy, self.names.dead_letters)
        await message.ack()
        metrics.EVENTS_DEAD_LETTERED.labels(spec.name).inc()

    async def publish(self, message: aio_pika.Message, queue: str) -> None:
        """Publish to ``queue`` through the default exchange and wait for the confirm."""
        if self.publisher is None:
            raise RuntimeError("worker is not connected")
        await self.publisher.default_exchange.publish(message, queue, mandatory=True)


def now_ms() -> int:
    """The wall clock in milliseconds (the headers' times)."""
    return int(time.time() * 1000)
