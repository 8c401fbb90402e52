"""The broker topology: one topic exchange, a work queue per handler and one dead-letter queue
for everything. Declared idempotently (``declare_topology``).

Names derive from ``settings.queue_prefix`` and the handler name, so that test runs and
deployments sharing a broker never collide. Every queue is a quorum queue. Retries and
deferrals do not wait in the broker: they are scheduled in PostgreSQL and published to the work
queue when due (ADR 0028); the retry and delay queues of before (ADR 0023) are emptied and
deleted by ``orderflow migrate`` (``kernel.waiting_rooms``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from orderflow.settings import Settings

log = structlog.get_logger(__name__)

# Message headers the backbone reads and writes.
ATTEMPT = "x-orderflow-attempt"  # 1 for the first delivery, +1 per retry
HANDLER = "x-orderflow-handler"  # on dead letters: whose work queue it came from
ERROR = "x-orderflow-error"  # on dead letters: why
ROUTING_KEY = "x-orderflow-routing-key"  # on dead letters: the event type it was published as
FIRST_FAILED = "x-orderflow-first-failed-ms"  # epoch ms of the first failed attempt
FAILED = "x-orderflow-failed-ms"  # on dead letters: epoch ms of the last failure

# Work queues of releases before ADR 0028 were declared with these too: at-least-once
# dead-lettering (which needs reject-publish). On RabbitMQ 3.10 that strategy depends on a
# supervisor (rabbit_fifo_dlx_sup) that repeated stop_app/start_app cycles lose, and every
# queue using it then goes down. New work queues dead-letter a message past its delivery limit
# at-most-once (the broker's default); an existing queue keeps its arguments (a queue's
# arguments cannot change): see ``_declare_work``.
_LEGACY_AT_LEAST_ONCE_DLX = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True, slots=True)
class HandlerQueues:
    """The queue names of one handler."""

    work: str


@dataclass(frozen=True, slots=True)
class Names:
    """Every name the backbone uses, for one prefix and exchange."""

    exchange: str
    prefix: str
    dead_letters: str
    expires_ms: int | None = None  # delete queues unused this long (test runs set it)

    @classmethod
    def from_settings(cls, settings: Settings) -> Names:
        return cls(
            exchange=settings.exchange,
            prefix=settings.queue_prefix,
            dead_letters=f"{settings.queue_prefix}.dead-letters",
            expires_ms=settings.queue_expires_ms,
        )

    @property
    def queue_head(self) -> str:
        """What every queue name of this prefix starts with."""
        return f"{self.prefix}."

    def handler(self, name: str) -> HandlerQueues:
        """The queues of handler ``name``."""
        return HandlerQueues(work=f"{self.queue_head}{name}")

    def handler_of(self, queue: str) -> str | None:
        """The handler whose work queue is ``queue``, if it is one of ours (also for the retry
        and delay queues of before ADR 0028, named in old dead letters)."""
        if not queue.startswith(self.queue_head):
            return None
        rest = queue[len(self.queue_head) :].split(".retry.")[0].removesuffix(".q")
        return rest.removesuffix(".delay") or None


def _back_to(queue: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


async def declare_topology(
    channel: AbstractChannel,
    names: Names,
    bindings: Mapping[str, Sequence[str]],
    *,
    delivery_limit: int,
) -> AbstractExchange:
    """Declare the exchange, the dead letters and, per handler, its queues and bindings.

    ``bindings`` maps a handler name to the event types it subscribes to. Idempotent: the
    arguments are the same every time for the same settings.
    """
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    expires: dict[str, Any] = {"x-expires": names.expires_ms} if names.expires_ms else {}
    quorum: dict[str, Any] = {"x-queue-type": "quorum", **expires}
    await channel.declare_queue(names.dead_letters, durable=True, arguments=quorum)
    for handler, event_types in bindings.items():
        queues = names.handler(handler)
        work = await _declare_work(
            channel,
            queues.work,
            {
                **quorum,
                **_back_to(names.dead_letters),
                # A message that keeps killing its consumer (never acked nor rejected) ends in
                # the dead letters instead of looping forever. RabbitMQ 3.10 sets no limit.
                "x-delivery-limit": delivery_limit,
            },
        )
        for event_type in event_types:
            await work.bind(exchange, routing_key=event_type)
    return exchange


async def _declare_work(
    channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> AbstractQueue:
    """Declare a work queue; one declared before ADR 0028 is kept with its old arguments (the
    broker refuses a re-declaration with other ones, and closes the channel: it is reopened)."""
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        await channel.reopen()
    legacy = {**arguments, **_LEGACY_AT_LEAST_ONCE_DLX}
    queue = await channel.declare_queue(name, durable=True, arguments=legacy)
    log.warning("work_queue_keeps_old_arguments", queue=name, see="ADR 0028")
    return queue


async def delete_topology(channel: AbstractChannel, names: Names, handlers: Sequence[str]) -> None:
    """Delete what ``declare_topology`` made for ``handlers`` (test clean-up)."""
    for handler in handlers:
        await channel.queue_delete(names.handler(handler).work)
    await channel.queue_delete(names.dead_letters)
    await channel.exchange_delete(names.exchange)
