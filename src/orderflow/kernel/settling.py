"""Settling a delivery its handler did not apply: defer it or retry it later (a scheduled
delivery, one INSERT in PostgreSQL that the relay publishes when due: ADR 0028), or keep it as
a dead letter (published with a confirm); the original is acked only once its copy is safe.

If the copy cannot be stored (PostgreSQL unreachable), the original is not acked: the worker
keeps it and tries again with back-off for ``scheduling_hold_s``, then hands it back to its
queue (``nack`` with requeue) to be delivered again. Nothing is lost and nothing spins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from orderflow.kernel import outbox, scheduled
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.broker import copy_message, header_int, scheduled_copy
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


def retry_delay_s(settings: Settings, attempt: int) -> float:
    """How long a delivery that failed on ``attempt`` (1-based) waits for its retry: the base
    delay, doubling per attempt, up to the delay before the last attempt."""
    retries = max(1, settings.retry_max_attempts - 1)
    doublings: int = min(max(attempt, 1), retries) - 1
    return settings.retry_base_delay_ms * float(2**doublings) / 1000


class Settler:
    """Schedules the retries and deferrals of a worker's deliveries and publishes its dead
    letters."""

    def __init__(self, settings: Settings, names: Names, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.names = names
        self.pool = pool
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
        copy = scheduled_copy(message, queue=queues.work, reason="defer", headers={})
        if await self.schedule(spec, message, copy, delay_s=exc.delay_s):
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
            headers = {ATTEMPT: attempt + 1, FIRST_FAILED: first}
            copy = scheduled_copy(message, queue=queues.work, reason="retry", headers=headers)
            delay_s = retry_delay_s(self.settings, attempt)
            if await self.schedule(spec, message, copy, delay_s=delay_s):
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

    async def schedule(
        self,
        spec: Handler,
        message: AbstractIncomingMessage,
        copy: scheduled.Scheduled,
        *,
        delay_s: float,
    ) -> bool:
        """Store ``copy``, due in ``delay_s``; True once stored. While PostgreSQL fails, keep
        trying with back-off for ``scheduling_hold_s`` (the message stays unacked), then hand
        the message back to its queue and return False."""
        deadline = time.monotonic() + self.settings.scheduling_hold_s
        backoff = Backoff(self.settings.reconnect_max_backoff_s, first_s=0.1)
        never = asyncio.Event()
        while True:
            try:
                await scheduled.schedule(self.pool, copy, delay_s=delay_s)
                if delay_s < self.settings.scheduled_poll_interval_s:
                    outbox.wake_relays(self.pool)  # due before the relays' next look
                return True
            except Exception as exc:
                left = deadline - time.monotonic()
                log.warning(
                    "delivery_scheduling_failed",
                    reason=copy.reason,
                    error=repr(exc),
                    holding_s=round(max(0.0, left), 1),
                )
                if not is_transient(exc) or left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await backoff.wait(never)
        # Redelivered later with the same attempt header: the handler runs again then.
        await message.nack(requeue=True)
        metrics.EVENTS_CONSUMED.labels(spec.name, "requeued").inc()
        return False

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
