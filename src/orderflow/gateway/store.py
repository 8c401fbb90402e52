"""The provider's own records, in the PostgreSQL schema ``gateway``: payment intents, refunds,
the ledger of every money movement, idempotency keys (kept for ``key_ttl``), transient-failure
counts per key, and the webhooks still to deliver. The gateway creates its schema itself at
start-up: it stands for an outside service, not a part of the order system's migrations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS gateway",
    """CREATE TABLE IF NOT EXISTS gateway.intents (
        id              text PRIMARY KEY,
        amount          bigint NOT NULL CHECK (amount >= 0),
        currency        char(3) NOT NULL,
        payment_method  text NOT NULL,
        status          text NOT NULL CHECK (status IN
                        ('processing','requires_capture','declined','captured','voided','refunded')),
        decline_reason  text,
        amount_captured bigint NOT NULL DEFAULT 0,
        amount_refunded bigint NOT NULL DEFAULT 0,
        metadata        jsonb NOT NULL DEFAULT '{}',
        created_at      timestamptz NOT NULL DEFAULT now(),
        updated_at      timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS gateway.refunds (
        id         text PRIMARY KEY,
        intent_id  text NOT NULL UNIQUE REFERENCES gateway.intents(id),
        amount     bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS gateway.ledger (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        intent_id       text NOT NULL REFERENCES gateway.intents(id),
        kind            text NOT NULL CHECK (kind IN
                        ('authorize','decline','capture','void','refund')),
        amount          bigint NOT NULL,
        currency        char(3) NOT NULL,
        idempotency_key text,
        at              timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_intent_idx ON gateway.ledger (intent_id)",
    """CREATE TABLE IF NOT EXISTS gateway.idempotency_keys (
        operation    text NOT NULL,
        key          text NOT NULL,
        request_hash text NOT NULL,
        object_id    text NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (operation, key)
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_age_idx ON gateway.idempotency_keys (created_at)",
    """CREATE TABLE IF NOT EXISTS gateway.transient_failures (
        key        text PRIMARY KEY,
        failures   integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS gateway.webhooks (
        id           text PRIMARY KEY,
        type         text NOT NULL,
        intent_id    text NOT NULL REFERENCES gateway.intents(id),
        due_at       timestamptz NOT NULL,
        attempts     integer NOT NULL DEFAULT 0,
        last_error   text,
        delivered_at timestamptz
    )""",
    "CREATE INDEX IF NOT EXISTS webhooks_due_idx ON gateway.webhooks (due_at) "
    "WHERE delivered_at IS NULL",
)
_SCHEMA_LOCK = 0x6F72_6466_6777  # one creator at a time when several gateways start


async def create_schema(pool: asyncpg.Pool) -> None:
    """Create the gateway's tables if they are missing."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        for statement in SCHEMA:
            await conn.execute(statement)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    amount: int
    currency: str
    payment_method: str
    status: str
    decline_reason: str | None
    amount_captured: int
    amount_refunded: int
    metadata: dict[str, Any]
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """The intent as the API shows it."""
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency.strip(),
            "status": self.status,
            "decline_reason": self.decline_reason,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
        }


_INTENT = (
    "id, amount, currency, payment_method, status, decline_reason, amount_captured, "
    "amount_refunded, metadata, created_at"
)


def _intent(row: asyncpg.Record) -> Intent:
    return Intent(**dict(row))  # the pool's codec decodes jsonb


async def lock_key(conn: asyncpg.Connection, operation: str, key: str) -> None:
    """Serialise the requests that share an idempotency key (until the transaction ends)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{operation}:{key}"
    )


async def remembered(conn: asyncpg.Connection, operation: str, key: str) -> tuple[str, str] | None:
    """(request hash, object id) of a request made before under this key, if still kept."""
    row = await conn.fetchrow(
        "SELECT request_hash, object_id FROM gateway.idempotency_keys "
        "WHERE operation = $1 AND key = $2",
        operation,
        key,
    )
    return (row["request_hash"], row["object_id"]) if row else None


async def remember(
    conn: asyncpg.Connection, operation: str, key: str, request_hash: str, object_id: str
) -> None:
    await conn.execute(
        "INSERT INTO gateway.idempotency_keys (operation, key, request_hash, object_id) "
        "VALUES ($1, $2, $3, $4)",
        operation,
        key,
        request_hash,
        object_id,
    )


async def count_failure(conn: asyncpg.Connection, key: str) -> None:
    """Count one more transient failure under ``key``."""
    await conn.execute(
        "INSERT INTO gateway.transient_failures (key, failures) VALUES ($1, 1) "
        "ON CONFLICT (key) DO UPDATE SET failures = gateway.transient_failures.failures + 1",
        key,
    )


async def failures(conn: asyncpg.Connection, key: str) -> int:
    value = await conn.fetchval(
        "SELECT failures FROM gateway.transient_failures WHERE key = $1", key
    )
    return int(value or 0)


async def insert_intent(
    conn: asyncpg.Connection,
    *,
    amount: int,
    currency: str,
    payment_method: str,
    status: str,
    decline_reason: str | None,
    metadata: dict[str, Any],
) -> Intent:
    row = await conn.fetchrow(
        f"""INSERT INTO gateway.intents
            (id, amount, currency, payment_method, status, decline_reason, metadata)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_INTENT}""",
        new_id("pi"),
        amount,
        currency,
        payment_method,
        status,
        decline_reason,
        metadata,  # the pool's codec encodes jsonb
    )
    return _intent(row)


async def get_intent(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: str, *, lock: bool = False
) -> Intent | None:
    row = await conn.fetchrow(
        f"SELECT {_INTENT} FROM gateway.intents WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        intent_id,
    )
    return _intent(row) if row else None


async def move(
    conn: asyncpg.Connection,
    intent: Intent,
    *,
    status: str,
    kind: str,
    key: str | None,
    captured: int | None = None,
    refunded: int | None = None,
) -> Intent:
    """Move a locked intent to ``status`` and write the ledger line of the movement."""
    row = await conn.fetchrow(
        f"""UPDATE gateway.intents SET status = $2,
               amount_captured = coalesce($3, amount_captured),
               amount_refunded = coalesce($4, amount_refunded), updated_at = now()
            WHERE id = $1 RETURNING {_INTENT}""",
        intent.id,
        status,
        captured,
        refunded,
    )
    await record(conn, intent, kind=kind, key=key)
    return _intent(row)


async def record(conn: asyncpg.Connection, intent: Intent, *, kind: str, key: str | None) -> None:
    """Append a ledger line for ``intent``."""
    await conn.execute(
        "INSERT INTO gateway.ledger (intent_id, kind, amount, currency, idempotency_key) "
        "VALUES ($1, $2, $3, $4, $5)",
        intent.id,
        kind,
        intent.amount,
        intent.currency,
        key,
    )


async def insert_refund(conn: asyncpg.Connection, intent: Intent) -> str:
    refund_id = new_id("re")
    await conn.execute(
        "INSERT INTO gateway.refunds (id, intent_id, amount) VALUES ($1, $2, $3)",
        refund_id,
        intent.id,
        intent.amount,
    )
    return refund_id


async def get_refund(conn: asyncpg.Connection, refund_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT r.id, r.intent_id, r.amount, i.currency, r.created_at FROM gateway.refunds r "
        "JOIN gateway.intents i ON i.id = r.intent_id WHERE r.id = $1",
        refund_id,
    )
    if row is None:
        return None
    return {
        "id": row["id"],
        "object": "refund",
        "payment_intent": row["intent_id"],
        "amount": row["amount"],
        "currency": row["currency"].strip(),
        "status": "succeeded",
        "created_at": row["created_at"].isoformat(),
    }


async def schedule_webhook(
    conn: asyncpg.Connection, *, type_: str, intent_id: str, delay_s: float
) -> None:
    await conn.execute(
        "INSERT INTO gateway.webhooks (id, type, intent_id, due_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        new_id("evt"),
        type_,
        intent_id,
        delay_s,
    )


async def ledger(pool: asyncpg.Pool, *, after: int, limit: int) -> list[dict[str, Any]]:
    """Ledger lines after id ``after``, oldest first, with the intent's metadata."""
    rows = await pool.fetch(
        """SELECT l.id, l.intent_id, l.kind, l.amount, l.currency, l.idempotency_key, l.at,
                  i.metadata
           FROM gateway.ledger l JOIN gateway.intents i ON i.id = l.intent_id
           WHERE l.id > $1 ORDER BY l.id LIMIT $2""",
        after,
        limit,
    )
    entries = []
    for row in rows:
        metadata = row["metadata"]
        entries.append(
            {
                "id": row["id"],
                "intent_id": row["intent_id"],
                "kind": row["kind"],
                "amount": row["amount"],
                "currency": row["currency"].strip(),
                "order_id": metadata.get("order_id"),
                "payment_id": metadata.get("payment_id"),
                "idempotency_key": row["idempotency_key"],
                "at": row["at"].isoformat(),
            }
        )
    return entries


async def forget_old_keys(pool: asyncpg.Pool, *, older_than_s: float) -> int:
    """Drop idempotency keys (and failure counts) older than the retention."""
    async with pool.acquire() as conn, conn.transaction():
        done = await conn.execute(
            "DELETE FROM gateway.idempotency_keys "
            "WHERE created_at < now() - make_interval(secs => $1)",
            older_than_s,
        )
        await conn.execute(
            "DELETE FROM gateway.transient_failures "
            "WHERE created_at < now() - make_interval(secs => $1)",
            older_than_s,
        )
    return int(done.split()[-1])
