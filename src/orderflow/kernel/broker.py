"""AMQP messages (built from outbox rows and scheduled deliveries, copied for retries and dead
letters), connections, back-off."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from orderflow.kernel.backoff import Backoff
from orderflow.kernel.outbox import OutboxRow
from orderflow.kernel.scheduled import Reason, Scheduled, StoredMessage
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


def merged_headers(
    message: AbstractIncomingMessage, headers: dict[str, Any], *, keep_broker_headers: bool
) -> dict[str, Any]:
    """``message``'s headers (without the broker's dead-lettering ones unless kept) with
    ``headers`` merged over them."""
    merged = {
        k: v
        for k, v in (message.headers or {}).items()
        if keep_broker_headers or k not in _BROKER_HEADERS
    }
    merged.update(headers)
    return merged


def stored_copy(
    message: AbstractIncomingMessage, *, headers: dict[str, Any], keep_broker_headers: bool = False
) -> StoredMessage:
    """``message``'s body and properties, with ``headers`` merged over its own."""
    return StoredMessage(
        body=message.body,
        message_id=message.message_id,
        event_type=message.type,
        content_type=message.content_type or CONTENT_TYPE,
        correlation_id=message.correlation_id,
        headers=merged_headers(message, headers, keep_broker_headers=keep_broker_headers),
    )


def persistent_message(stored: StoredMessage) -> aio_pika.Message:
    """The persistent message to publish for ``stored``."""
    return aio_pika.Message(
        stored.body,
        message_id=stored.message_id,
        type=stored.event_type,
        content_type=stored.content_type or CONTENT_TYPE,
        correlation_id=stored.correlation_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=stored.headers,
    )


def copy_message(
    message: AbstractIncomingMessage,
    *,
    headers: dict[str, Any],
    keep_broker_headers: bool = False,
) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers`` merged over its own."""
    copy = stored_copy(message, headers=headers, keep_broker_headers=keep_broker_headers)
    return persistent_message(copy)


def scheduled_copy(
    message: AbstractIncomingMessage, *, queue: str, reason: Reason, headers: dict[str, Any]
) -> Scheduled:
    """What to schedule for ``message`` on ``queue``: its body, properties and headers (the
    broker's own dropped) with ``headers`` merged over them."""
    return Scheduled(queue=queue, reason=reason, message=stored_copy(message, headers=headers))


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


class BrokerLost(Exception):
    """The broker connection or channel closed under a publisher."""


# A publishing session: given a confirming channel and a check of whether it was closed under
# it, publish until the process stops (return) or the broker goes (raise).
Session = Callable[[AbstractChannel, Callable[[], bool]], Awaitable[None]]


async def publish_until_stopped(
    settings: Settings, *, name: str, stop: asyncio.Event, session: Session
) -> None:
    """Run ``session`` on a confirming channel (returns raise) until ``stop``; when the broker
    is lost, reconnect with back-off and run it again. ``name`` names the connection and the
    log line (``<name>_broker_lost``)."""
    backoff = Backoff(settings.reconnect_max_backoff_s)
    while not stop.is_set():
        connection = await connect_with_backoff(
            settings, name=f"orderflow-{name}", stop=stop, backoff=backoff
        )
        if connection is None:
            return
        try:
            async with connection:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                backoff.reset()
                await session(channel, functools.partial(_is_closed, connection, channel))
        except (BrokerLost, OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning(f"{name.replace('-', '_')}_broker_lost", error=repr(exc))
            await backoff.wait(stop)


def _is_closed(connection: AbstractConnection, channel: AbstractChannel) -> bool:
    # A broker stopping may close the channel before the connection notices.
    return bool(connection.is_closed or channel.is_closed)
