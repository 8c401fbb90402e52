"""Operating the dead letters: list them, replay them to their handler, or discard them.

Messages are fetched unacknowledged: what an action does not settle returns to the queue when
the channel closes. A filter (handler, reason, event type, age, order) picks letters; a dry
run settles nothing and reports what the action would take. The back office and the CLI both
act through ``process``; each records what it did (``operations.backoffice.record_action``).
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage

from orderflow.kernel.broker import connect, copy_message, header_int
from orderflow.kernel.database import create_pool
from orderflow.kernel.topology import (
    ATTEMPT,
    ERROR,
    FAILED,
    FIRST_FAILED,
    HANDLER,
    ROUTING_KEY,
    Names,
)
from orderflow.operations.backoffice import record_action
from orderflow.settings import Settings

ACTIONS = ("list", "replay", "discard")
PAYLOAD_CHARS = 4000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What an operator needs to know about one dead letter."""

    message_id: str
    handler: str | None
    event_type: str
    attempt: int
    error: str
    first_failed_at: datetime | None = None
    failed_at: datetime | None = None
    order_id: str | None = None
    payload: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "handler": self.handler,
            "event_type": self.event_type,
            "attempt": self.attempt,
            "error": self.error,
            "first_failed_at": self.first_failed_at.isoformat() if self.first_failed_at else None,
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
            "order_id": self.order_id,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters an action takes; unset fields match everything."""

    handler: str | None = None
    reason: str | None = None  # a part of the error, any case
    event_type: str | None = None
    min_age_s: float | None = None  # failed at least this long ago
    max_age_s: float | None = None  # failed at most this long ago
    order_id: str | None = None

    def matches(self, letter: DeadLetter, now: float) -> bool:
        """Whether ``letter`` passes every set field."""
        if self.handler and letter.handler != self.handler:
            return False
        if self.reason and self.reason.lower() not in letter.error.lower():
            return False
        if self.event_type and letter.event_type != self.event_type:
            return False
        if self.order_id and letter.order_id != self.order_id:
            return False
        if self.min_age_s is not None or self.max_age_s is not None:
            if letter.failed_at is None:
                return False
            age = now - letter.failed_at.timestamp()
            if self.min_age_s is not None and age < self.min_age_s:
                return False
            if self.max_age_s is not None and age > self.max_age_s:
                return False
        return True


def describe(message: AbstractIncomingMessage, names: Names) -> DeadLetter:
    """Read a dead letter's headers and body; one the broker dead-lettered (delivery limit)
    has none of our headers, so its handler comes from the queue it died in."""
    headers = message.headers or {}
    handler = _text(headers.get(HANDLER))
    error = _text(headers.get(ERROR))
    if not handler:
        first = _text(headers.get("x-first-death-queue"))
        handler = (names.handler_of(first) if first else None) or ""
        error = error or f"broker: {_text(headers.get('x-first-death-reason')) or 'unknown'}"
    payload, order_id = _payload(message.body)
    return DeadLetter(
        message_id=message.message_id or "",
        handler=handler or None,
        event_type=_text(headers.get(ROUTING_KEY)) or message.type or "",
        attempt=header_int(message, ATTEMPT, 1),
        error=error,
        first_failed_at=_when(header_int(message, FIRST_FAILED, 0)),
        failed_at=_when(header_int(message, FAILED, 0)),
        order_id=order_id,
        payload=payload,
    )


def _payload(body: bytes) -> tuple[Any, str | None]:
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:PAYLOAD_CHARS].decode(errors="replace"), None
    found = envelope.get("order_id") if isinstance(envelope, dict) else None
    order_id = str(found) if found else None
    if len(body) > PAYLOAD_CHARS:
        return body[:PAYLOAD_CHARS].decode(errors="replace") + "…", order_id
    return envelope, order_id


def _when(epoch_ms: int) -> datetime | None:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms > 0 else None


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
    where: Filter | None = None,
    dry_run: bool = False,
    limit: int = 10_000,
) -> list[DeadLetter]:
    """List (``action='list'``), replay or discard dead letters; the ones acted on (or, in a
    dry run, the ones the action would take, settling none).

    A letter is taken when ``every`` is set or its message id is in ``ids``, and it passes
    ``where``. Replay re-publishes to the work queue of the handler that dead-lettered the
    message, with a fresh attempt count, then removes it from the dead letters.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown dead-letter action {action!r}")
    names = Names.from_settings(settings)
    wanted = set(ids)
    where = where or Filter()
    now = time.time()
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
            if not where.matches(letter, now):
                continue
            if action == "list":
                done.append(letter)
                continue
            if not (every or letter.message_id in wanted):
                continue
            if action == "replay" and letter.handler is None:
                continue  # nowhere to send it; it stays
            if not dry_run:
                if action == "replay":
                    assert letter.handler is not None
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
    for header in (HANDLER, ERROR, ROUTING_KEY, FAILED, FIRST_FAILED):
        copy.headers.pop(header, None)
    await channel.default_exchange.publish(copy, names.handler(handler).work, mandatory=True)


async def record_actions(
    pool: asyncpg.Pool,
    *,
    actor: str,
    action: str,
    letters: Iterable[DeadLetter],
    why: str | None,
) -> None:
    """One ``admin_actions`` row per letter acted on, shown on its order's page."""
    async with pool.acquire() as conn, conn.transaction():
        for letter in letters:
            await record_action(
                conn,
                actor=actor,
                action=f"dead_letter.{action}",
                order_id=_uuid(letter.order_id),
                detail={
                    "message_id": letter.message_id,
                    "handler": letter.handler,
                    "event_type": letter.event_type,
                    "error": letter.error,
                    "reason": why,
                },
            )


async def record(
    settings: Settings, *, action: str, letters: Iterable[DeadLetter], why: str | None
) -> None:
    """Record what the CLI did, as ``cli:<operating-system user>``."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        user = getpass.getuser()
        await record_actions(pool, actor=f"cli:{user}", action=action, letters=letters, why=why)
    finally:
        await pool.close()


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
