"""The broker topology: one topic exchange, and per handler a work queue, retry queues, a delay
queue; one dead-letter queue for everything. Declared idempotently (``declare_topology``).

Names derive from ``settings.queue_prefix`` and the handler name, so that test runs and
deployments sharing a broker never collide. Retry queue names carry their TTL: changing the
retry settings declares new queues instead of failing on changed arguments. Every queue is a
quorum queue, and every hop out of one by dead-lettering is at-least-once: a retry or a delay
waiting in the broker survives its stop, start or crash (ADR 0023). The waiting rooms' names
end in ``.q`` because their classic predecessors (at-most-once dead-lettering, which lost
every waiting retry in a broker restart) had the plain names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from orderflow.settings import Settings

# Message headers the backbone reads and writes.
ATTEMPT = "x-orderflow-attempt"  # 1 for the first delivery, +1 per retry
HANDLER = "x-orderflow-handler"  # on dead letters: whose work queue it came from
ERROR = "x-orderflow-error"  # on dead letters: why
ROUTING_KEY = "x-orderflow-routing-key"  # on dead letters: the event type it was published as
FIRST_FAILED = "x-orderflow-first-failed-ms"  # epoch ms of the first failed attempt
FAILED = "x-orderflow-failed-ms"  # on dead letters: epoch ms of the last failure

_AT_LEAST_ONCE_DLX = {
    # Quorum queues dead-letter at-least-once only when they refuse publishes when full
    # rather than dropping the head.
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def retry_delays_ms(settings: Settings) -> list[int]:
    """The TTL of each retry queue: the base delay, doubling, one per retry allowed."""
    return [settings.retry_base_delay_ms * 2**i for i in range(settings.retry_max_attempts - 1)]


@dataclass(frozen=True, slots=True)
class HandlerQueues:
    """The queue names of one handler."""

    work: str
    retries: tuple[tuple[int, str], ...]  # (ttl in ms, queue name), shortest first
    delay: str

    def retry_for(self, attempt: int) -> str:
        """The retry queue for a delivery that failed on ``attempt`` (1-based)."""
        index = min(attempt, len(self.retries)) - 1
        return self.retries[index][1]


@dataclass(frozen=True, slots=True)
class Names:
    """Every name the backbone uses, for one prefix and exchange."""

    exchange: str
    prefix: str
    dead_letters: str
    delays_ms: tuple[int, ...]
    expires_ms: int | None = None  # delete queues unused this long (test runs set it)
    quorum_waiting: bool = True  # retry and delay queues are quorum queues (ADR 0023)

    @classmethod
    def from_settings(cls, settings: Settings) -> Names:
        return cls(
            exchange=settings.exchange,
            prefix=settings.queue_prefix,
            dead_letters=f"{settings.queue_prefix}.dead-letters",
            delays_ms=tuple(retry_delays_ms(settings)),
            expires_ms=settings.queue_expires_ms,
            quorum_waiting=settings.waiting_queue_type == "quorum",
        )

    def handler(self, name: str) -> HandlerQueues:
        """The queues of handler ``name``."""
        work = f"{self.prefix}.{name}"
        q = ".q" if self.quorum_waiting else ""  # the classic ones keep their old names
        return HandlerQueues(
            work=work,
            retries=tuple((ms, f"{work}.retry.{ms}ms{q}") for ms in self.delays_ms),
            delay=f"{work}.delay{q}",
        )

    def handler_of(self, queue: str) -> str | None:
        """The handler whose work queue is ``queue``, if it is one of ours."""
        head = f"{self.prefix}."
        if not queue.startswith(head):
            return None
        rest = queue[len(head) :].split(".retry.")[0].removesuffix(".q")
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
    # The waiting rooms (retry and delay queues) are quorum queues too, dead-lettering back
    # at-least-once: a classic queue's dead-lettering is at-most-once, and a broker restart
    # dropped every retry that expired while the work queue had no leader yet (ADR 0023).
    waiting: dict[str, Any] = (
        {**quorum, **_AT_LEAST_ONCE_DLX}
        if names.quorum_waiting
        else {"x-queue-type": "classic", **expires}
    )
    await channel.declare_queue(names.dead_letters, durable=True, arguments=quorum)
    for handler, event_types in bindings.items():
        queues = names.handler(handler)
        work = await channel.declare_queue(
            queues.work,
            durable=True,
            arguments={
                **quorum,
                **_AT_LEAST_ONCE_DLX,
                **_back_to(names.dead_letters),
                # A message that keeps killing its consumer (never acked nor rejected) ends in
                # the dead letters instead of looping forever. RabbitMQ 3.10 sets no limit.
                "x-delivery-limit": delivery_limit,
            },
        )
        for ttl_ms, retry in queues.retries:
            await channel.declare_queue(
                retry,
                durable=True,
                arguments={**waiting, **_back_to(queues.work), "x-message-ttl": ttl_ms},
            )
        await channel.declare_queue(
            queues.delay,
            durable=True,
            arguments={**waiting, **_back_to(queues.work)},
        )
        for event_type in event_types:
            await work.bind(exchange, routing_key=event_type)
    return exchange


async def delete_topology(channel: AbstractChannel, names: Names, handlers: Sequence[str]) -> None:
    """Delete what ``declare_topology`` made for ``handlers`` (test clean-up)."""
    for handler in handlers:
        queues = names.handler(handler)
        for name in (queues.work, queues.delay, *(q for _, q in queues.retries)):
            await channel.queue_delete(name)
    await channel.queue_delete(names.dead_letters)
    await channel.exchange_delete(names.exchange)
