"""PostgreSQL connection pool (asyncpg) and database bootstrap helpers."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from orderflow.settings import Settings

Pool = asyncpg.Pool


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset sends "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    # RESET ALL" on every release: one more round trip per request. Pooled connections here
    # hold no session state (no advisory locks, LISTEN or SET; the relay listens on a
    # connection of its own, cursors only live inside transactions), so only an unfinished
    # transaction needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def application_name(process: str) -> str:
    """How a process's connections are named in ``pg_stat_activity`` (the back office's list
    of processes seen alive reads it): ``orderflow-<process> <host>:<pid>``."""
    return f"orderflow-{process} {socket.gethostname()}:{os.getpid()}"[:63]


async def create_pool(
    settings: Settings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    process: str | None = None,
) -> asyncpg.Pool:
    """Open the process's connection pool; the caller closes it."""
    named = {"application_name": application_name(process)} if process else None
    pool = await asyncpg.create_pool(
        settings.dsn(),
        server_settings=named,
        min_size=min_size or settings.db_pool_min,
        max_size=max_size or settings.db_pool_max,
        command_timeout=settings.db_command_timeout_s,
        init=_init_connection,
        reset=_reset_connection,
    )
    assert pool is not None
    return pool


def sqlalchemy_url(dsn: str) -> str:
    """The DSN in SQLAlchemy's spelling, for Alembic over asyncpg."""
    scheme, _, rest = dsn.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in {"postgres", "postgresql"} else dsn


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    """The database a DSN names."""
    return urlsplit(dsn).path.lstrip("/") or "postgres"


async def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist; True if it was created."""
    name = database_name(dsn)
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    """Drop the database ``dsn`` names, disconnecting whoever is still on it."""
    name = database_name(dsn)
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
