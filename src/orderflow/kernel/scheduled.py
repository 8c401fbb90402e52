"""Scheduled deliveries: a message due on a work queue at a time, kept in PostgreSQL.

A worker schedules a retry or a deferral with one INSERT (``schedule``) and then acks the
original; a relay claims the rows that are due (``claim``, ``FOR UPDATE SKIP LOCKED``),
publishes them with confirms and deletes them in the same transaction (``delete``). A relay
that dies before its commit leaves its rows for the next one: at-least-once, and the inbox
removes the copies (ADR 0028).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

Reason = Literal["retry", "defer"]
REASONS: tuple[Reason, ...] = ("retry", "defer")

_INSERT = """
INSERT INTO scheduled_deliveries
    (queue, reason, body, message_id, event_type, content_type, correlation_id, headers, due_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, now() + make_interval(secs => $9))
"""
# Only the queues of this deployment (its prefix): test runs share one database.
_CLAIM = """
SELECT id, queue, reason, body, message_id, event_type, content_type, correlation_id,
       headers::text AS headers
FROM scheduled_deliveries
WHERE due_at <= now() AND starts_with(queue, $1)
ORDER BY due_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
_DELETE = "DELETE FROM scheduled_deliveries WHERE id = ANY($1::bigint[])"
_POSTPONE = """
UPDATE scheduled_deliveries SET due_at = now() + make_interval(secs => $2)
WHERE id = ANY($1::bigint[])
"""
_WAITING = "SELECT reason, count(*) AS n FROM scheduled_deliveries GROUP BY reason"
_WAITING_BY_QUEUE = """
SELECT queue, reason, count(*) AS n FROM scheduled_deliveries
WHERE starts_with(queue, $1) GROUP BY queue, reason
"""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message's body, properties and headers, as kept to be published again."""

    body: bytes
    message_id: str | None
    event_type: str | None
    content_type: str | None
    correlation_id: str | None
    headers: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A copy of a message, to be published to ``queue`` when it is due."""

    queue: str
    reason: Reason
    message: StoredMessage


@dataclass(frozen=True, slots=True)
class ScheduledRow:
    """A scheduled delivery that is due, as a relay claimed it."""

    id: int
    delivery: Scheduled


async def schedule(pool: asyncpg.Pool, delivery: Scheduled, *, delay_s: float) -> None:
    """Store ``delivery``, due ``delay_s`` seconds from now (one statement, committed)."""
    message = delivery.message
    await pool.execute(
        _INSERT,
        delivery.queue,
        delivery.reason,
        message.body,
        message.message_id,
        message.event_type,
        message.content_type,
        message.correlation_id,
        orjson.dumps(json_headers(message.headers)).decode(),
        max(0.0, delay_s),
    )


async def claim(conn: asyncpg.Connection, *, prefix: str, limit: int) -> list[ScheduledRow]:
    """Lock up to ``limit`` due deliveries of queues named ``prefix``…, the most overdue first.

    Call inside a transaction: the rows stay locked (other relays skip them) until it ends.
    """
    records = await conn.fetch(_CLAIM, prefix, limit)
    return [
        ScheduledRow(
            id=r["id"],
            delivery=Scheduled(
                queue=r["queue"],
                reason=r["reason"],
                message=StoredMessage(
                    body=bytes(r["body"]),
                    message_id=r["message_id"],
                    event_type=r["event_type"],
                    content_type=r["content_type"],
                    correlation_id=r["correlation_id"],
                    headers=orjson.loads(r["headers"]),
                ),
            ),
        )
        for r in records
    ]


async def delete(conn: asyncpg.Connection, ids: list[int]) -> None:
    """The broker confirmed these deliveries: they are done."""
    if ids:
        await conn.execute(_DELETE, ids)


async def postpone(conn: asyncpg.Connection, ids: list[int], *, seconds: float) -> None:
    """Make these deliveries due again ``seconds`` from now (their queue does not exist)."""
    if ids:
        await conn.execute(_POSTPONE, ids, seconds)


async def waiting(pool: asyncpg.Pool) -> dict[Reason, int]:
    """How many deliveries wait, per reason (every reason present, 0 when none)."""
    rows = await pool.fetch(_WAITING)
    found = {r["reason"]: int(r["n"]) for r in rows}
    return {reason: found.get(reason, 0) for reason in REASONS}


async def waiting_by_queue(pool: asyncpg.Pool, *, prefix: str) -> dict[str, dict[Reason, int]]:
    """queue -> reason -> how many deliveries wait for it, for the queues named ``prefix``…"""
    found: dict[str, dict[Reason, int]] = {}
    for r in await pool.fetch(_WAITING_BY_QUEUE, prefix):
        found.setdefault(r["queue"], dict.fromkeys(REASONS, 0))[r["reason"]] = int(r["n"])
    return found


def json_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers as JSON can keep them: text, whole and finite numbers, booleans; bytes
    decoded; anything else (nested tables, times) as its text."""
    kept: dict[str, Any] = {}
    for name, value in headers.items():
        finite = isinstance(value, float) and math.isfinite(value)
        if value is None or finite or isinstance(value, (str, bool, int)):
            kept[name] = value
        elif isinstance(value, (bytes, bytearray)):
            kept[name] = bytes(value).decode(errors="replace")
        else:
            kept[name] = str(value)
    return kept
