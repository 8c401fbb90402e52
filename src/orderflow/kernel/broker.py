"""AMQP messages (built from outbox rows, copied for retries), connections, back-off."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from orderflow.kernel.backoff import Backoff
from orderflow.kernel.outbox import OutboxRow
from orderflow.kernel.topology import ATTEMPT
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/json"
# Headers the broker adds when it dead-letters; dropped when we republish a message ourselves.
_BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-delivery-count",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
    }
)


def traceparent(correlation_id: str | None, event_id: str) -> str | None:
    """A W3C trace context: the conversation is the trace, the event its span."""
    if not correlation_id:
        return None
    return f"00-{correlation_id.replace('-', '')}-{event_id.replace('-', '')[:16]}-01"


def outbox_message(row: OutboxRow) -> aio_pika.Message:
    """The persistent message for one outbox row; the body is the stored envelope."""
    headers: dict[str, Any] = {ATTEMPT: 1}
    if row.causation_id:
        headers["causation_id"] = row.causation_id
    trace = traceparent(row.correlation_id, row.event_id)
    if trace:
        headers["traceparent"] = trace
    return aio_pika.Message(
        row.body,
        message_id=row.event_id,
        type=row.event_type,
        content_type=CONTENT_TYPE,
        correlation_id=row.correlation_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )


def copy_message(
    message: AbstractIncomingMessage,
    *,
    headers: dict[str, Any],
    keep_broker_headers: bool = False,
    expiration_s: float | None = None,
) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers`` merged over its own."""
    merged = {
        k: v
        for k, v in (message.headers or {}).items()
        if keep_broker_headers or k not in _BROKER_HEADERS
    }
    merged.update(headers)
    return aio_pika.Message(
        message.body,
        message_id=message.message_id,
        type=message.type,
        content_type=message.content_type or CONTENT_TYPE,
        correlation_id=message.correlation_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=merged,
        expiration=expiration_s,
    )


def header_int(message: AbstractIncomingMessage, name: str, default: int) -> int:
    """An integer header, or ``default`` when absent or malformed."""
    value = (message.headers or {}).get(name, default)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


async def connect(settings: Settings, *, name: str) -> AbstractConnection:
    """A plain (not robust) connection: the caller owns reconnection and re-registration."""
    return await aio_pika.connect(
        settings.rabbitmq_url.get_secret_value(),
        timeout=5,
        client_properties={"connection_name": name},
        heartbeat=settings.rabbitmq_heartbeat_s,
    )


async def connect_with_backoff(
    settings: Settings, *, name: str, stop: asyncio.Event, backoff: Backoff
) -> AbstractConnection | None:
    """Connect, retrying with back-off; None if ``stop`` is set first."""
    while not stop.is_set():
        try:
            return await connect(settings, name=name)
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("broker_unreachable", connection=name, error=repr(exc))
            await backoff.wait(stop)
    return None
