"""Operating the dead letters: list them, replay them to their handler, or discard them.

Messages are fetched unacknowledged: what an action does not settle returns to the queue,
in order, when the channel closes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from orderflow.adapters.rabbitmq.client import connect, copy_message, header_int
from orderflow.adapters.rabbitmq.topology import ATTEMPT, ERROR, HANDLER, ROUTING_KEY, Names
from orderflow.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What an operator needs to know about one dead letter."""

    message_id: str
    handler: str | None
    event_type: str
    attempt: int
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "handler": self.handler,
            "event_type": self.event_type,
            "attempt": self.attempt,
            "error": self.error,
        }


def describe(message: AbstractIncomingMessage, names: Names) -> DeadLetter:
    """Read a dead letter's headers; one the broker dead-lettered (delivery limit) has none
    of ours, so its handler comes from the queue it died in."""
    headers = message.headers or {}
    handler = _text(headers.get(HANDLER))
    error = _text(headers.get(ERROR))
    if not handler:
        first = _text(headers.get("x-first-death-queue"))
        handler = (names.handler_of(first) if first else None) or ""
        error = error or f"broker: {_text(headers.get('x-first-death-reason')) or 'unknown'}"
    return DeadLetter(
        message_id=message.message_id or "",
        handler=handler or None,
        event_type=_text(headers.get(ROUTING_KEY)) or message.type or "",
        attempt=header_int(message, ATTEMPT, 1),
        error=error,
    )


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


async def process(
    settings: Settings,
    *,
    action: str,
    ids: Iterable[str] = (),
    every: bool = False,
    limit: int = 10_000,
) -> list[DeadLetter]:
    """List (``action='list'``), replay or discard dead letters; the ones acted on.

    Replay re-publishes to the work queue of the handler that dead-lettered the message,
    with a fresh attempt count, then removes it from the dead letters.
    """
    names = Names.from_settings(settings)
    wanted = set(ids)
    done: list[DeadLetter] = []
    connection = await connect(settings, name="orderflow-dead-letters")
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(names.dead_letters, passive=True)
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letter = describe(message, names)
            if action == "list":
                done.append(letter)
                continue
            if not (every or letter.message_id in wanted):
                continue
            if action == "replay":
                if letter.handler is None:
                    continue  # nowhere to send it; it stays
                await _replay(channel, names, message, letter.handler)
            await message.ack()
            done.append(letter)
    return done


async def _replay(
    channel: aio_pika.abc.AbstractChannel,
    names: Names,
    message: AbstractIncomingMessage,
    handler: str,
) -> None:
    copy = copy_message(message, headers={ATTEMPT: 1})
    for header in (HANDLER, ERROR, ROUTING_KEY):
        copy.headers.pop(header, None)
    await channel.default_exchange.publish(copy, names.handler(handler).work, mandatory=True)
