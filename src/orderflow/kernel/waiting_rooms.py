"""The retry and delay queues of before ADR 0028 (the "waiting rooms" of ADR 0023): emptied into
their work queues and deleted by ``orderflow migrate``, so that an upgraded broker keeps none.

Their names are known from the handler and the retry settings: ``<work>.retry.<ms>ms`` and
``<work>.delay``, with ``.q`` after them for the quorum ones. Whatever a waiting room still
holds is published (with a confirm) to its work queue before being acked there: a retry comes
back early rather than never, and the inbox keeps it applied once. Quorum queues refuse a
delete "if empty", so a room is deleted once a look found it empty; a retry an old worker
publishes into it in the milliseconds between would go with it (logged, and the reconciler
re-drives its order, ADR 0023). An old worker publishing after the delete gets its message
returned and does not ack the original.
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from orderflow.kernel.broker import copy_message
from orderflow.kernel.topology import Names
from orderflow.settings import Settings

log = structlog.get_logger(__name__)


def retry_delays_ms(settings: Settings) -> list[int]:
    """The TTLs the retry queues were named for: the base delay doubling, one per retry."""
    return [settings.retry_base_delay_ms * 2**i for i in range(settings.retry_max_attempts - 1)]


def waiting_rooms(names: Names, handler: str, delays_ms: Iterable[int]) -> list[str]:
    """The names ``handler``'s retry and delay queues had, classic and quorum."""
    work = names.handler(handler).work
    rooms = [f"{work}.retry.{ms}ms" for ms in delays_ms] + [f"{work}.delay"]
    return [*rooms, *(f"{room}.q" for room in rooms)]


async def retire_waiting_rooms(
    connection: AbstractConnection, names: Names, handlers: Iterable[str], settings: Settings
) -> list[str]:
    """Empty every waiting room of ``handlers`` into its work queue and delete it; the names
    of those deleted."""
    deleted = []
    delays_ms = retry_delays_ms(settings)
    for handler in handlers:
        work = names.handler(handler).work
        for room in waiting_rooms(names, handler, delays_ms):
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                queue = await channel.declare_queue(room, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue  # never declared, or deleted already (the broker closed the channel)
            try:
                moved = await _move(channel, queue, work)
                gone = await channel.queue_delete(room)
            except (aio_pika.exceptions.PublishError, aio_pika.exceptions.ChannelClosed) as exc:
                log.warning("waiting_room_kept", queue=room, error=repr(exc))
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
            if gone.message_count:
                log.error("waiting_room_deleted_with_messages", queue=room, lost=gone.message_count)
            log.info("waiting_room_deleted", queue=room, moved=moved)
            deleted.append(room)
    return deleted


async def _move(channel: AbstractChannel, queue: AbstractQueue, work: str) -> int:
    """Publish each message of ``queue`` to ``work`` and ack it once confirmed; how many."""
    moved = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        try:
            await channel.default_exchange.publish(
                copy_message(message, headers={}), work, mandatory=True
            )
        except BaseException:
            await message.nack(requeue=True)
            raise
        await message.ack()
        moved += 1
    return moved
