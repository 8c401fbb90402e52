"""A batch handler's deliveries: gathered into batches by natural batching, and acked with one
frame when that acks nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog
from aio_pika.abc import AbstractIncomingMessage

from orderflow.kernel.batching import Coalescer
from orderflow.kernel.consumer import Prepared
from orderflow.kernel.handlers import Delivery, Handler
from orderflow.kernel.topology import HandlerQueues
from orderflow.settings import Settings

log = structlog.get_logger("orderflow.kernel.worker")


class BatchApplier(Protocol):
    """What a ``Batcher`` needs of its worker."""

    settings: Settings
    slots: asyncio.Semaphore

    async def apply_batch(self, spec: Handler, queues: HandlerQueues, batch: list[Waiting]) -> None:
        """Apply a batch and settle its deliveries."""
        ...


class Unsettled:
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


async def ack_batch(batch: list[Waiting]) -> None:
    """Ack an applied batch; one frame when its channel allows it."""
    unsettled = batch[0].unsettled
    if all(w.unsettled is unsettled for w in batch):
        await unsettled.ack([w.message for w in batch])
        return
    for waiting in batch:  # a reconnection mixed channels: the old ones are gone anyway
        await waiting.message.ack()


@dataclass(frozen=True, slots=True)
class Waiting:
    message: AbstractIncomingMessage
    delivery: Delivery
    unsettled: Unsettled
    prepared: Prepared | None = None  # what the handler's prepare step gave this delivery


class Batcher:
    """Groups one batch handler's deliveries by natural batching (``kernel.batching``): one
    batch in flight at a time, and whatever arrives meanwhile forms the next one (up to
    ``worker_batch_max``). An idle handler applies a delivery at once; a busy one commits many
    per transaction. One batch at a time also means two batches of one handler never wait on
    each other's row locks. A window > 0 (the handler's ``batch_window_s``, else
    ``worker_batch_window_s``) lingers for a fuller batch."""

    def __init__(self, worker: BatchApplier, spec: Handler, queues: HandlerQueues) -> None:
        self.worker = worker
        self.spec = spec
        self.queues = queues
        self._coalescer: Coalescer[Waiting, None] = Coalescer(
            self._apply,
            max_batch=worker.settings.worker_batch_max,
            window_s=(
                worker.settings.worker_batch_window_s if spec.window_s is None else spec.window_s
            ),
        )

    async def submit(self, waiting: Waiting) -> None:
        """Add a delivery to the open batch and wait until its batch has been handled."""
        await self._coalescer.submit(waiting)

    async def _apply(self, batch: list[Waiting]) -> list[None]:
        try:
            with structlog.contextvars.bound_contextvars(handler=self.spec.name):
                async with self.worker.slots:
                    await self.worker.apply_batch(self.spec, self.queues, batch)
        except Exception as exc:  # the broker will redeliver what was not acked
            log.warning("batch_not_settled", handler=self.spec.name, error=repr(exc))
        return [None] * len(batch)
