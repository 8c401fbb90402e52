"""API key rows: only hashes are stored, looked up by their public prefix."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from orderflow.domain.access import Role

_COLUMNS = "id, prefix, key_hash, role, customer_id, label, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: uuid.UUID
    prefix: str
    key_hash: bytes
    role: Role
    customer_id: uuid.UUID | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _row(record: asyncpg.Record) -> ApiKeyRow:
    values = dict(record)
    values["role"] = Role(values["role"])
    return ApiKeyRow(**values)


async def insert(
    conn: asyncpg.Connection,
    *,
    key_id: uuid.UUID,
    prefix: str,
    key_hash: bytes,
    role: Role,
    customer_id: uuid.UUID | None,
    label: str,
) -> ApiKeyRow:
    """Store a new key's hash."""
    record = await conn.fetchrow(
        f"INSERT INTO api_keys (id, prefix, key_hash, role, customer_id, label) "
        f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        key_id,
        prefix,
        key_hash,
        role.value,
        customer_id,
        label,
    )
    return _row(record)


async def by_prefix(conn: asyncpg.Connection | asyncpg.Pool, prefix: str) -> ApiKeyRow | None:
    """The key with this prefix, revoked or not."""
    record = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE prefix = $1", prefix)
    return _row(record) if record else None


async def all_keys(conn: asyncpg.Connection, *, include_revoked: bool) -> list[ApiKeyRow]:
    """Every key, oldest first."""
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    records = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, id")
    return [_row(r) for r in records]


async def revoke(conn: asyncpg.Connection, ident: str) -> ApiKeyRow | None:
    """Revoke the key whose prefix or id is ``ident``; a revoked key stays revoked."""
    key_id: uuid.UUID | None
    try:
        key_id = uuid.UUID(ident)
    except ValueError:
        key_id = None
    record = await conn.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
        f"WHERE prefix = $1 OR id = $2 RETURNING {_COLUMNS}",
        ident,
        key_id,
    )
    return _row(record) if record else None


async def revoke_labelled(conn: asyncpg.Connection, label: str) -> int:
    """Revoke every live key with this label; returns how many."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE label = $1 AND revoked_at IS NULL", label
    )
    return int(status.split()[-1])
