"""Shared test set-up: every run gets its own PostgreSQL database and its own broker names.

Tests use the real services. When one is down they fail with a message that says how to
start it; they are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from pydantic import SecretStr

from orderflow.kernel.database import (
    create_pool,
    database_name,
    drop_database,
    ensure_database,
    with_database,
)
from orderflow.settings import DEFAULT_RATE_LIMITS, Settings

RUN_ID = uuid.uuid4().hex[:10]

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "RabbitMQ": "rabbitmq-server -detached",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
}


def require_service(name: str, url: str, default_port: int) -> None:
    """Fail the test run loudly if ``name`` does not answer on ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"{name} is not reachable at {host}:{port} ({exc}). Start it with: "
            f"{START_HINTS[name]}  (or run `make test`, which starts it)",
            pytrace=False,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_settings() -> Settings:
    return Settings(environment="test", log_level="WARNING")


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for name, value in settings:
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps(value)
        env[f"ORDERFLOW_{name.upper()}"] = str(value)
    return {**env, **extra}


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings for this run: its own database and its own exchange and queue names."""
    base = _base_settings()
    require_service("PostgreSQL", base.dsn(), 5432)
    require_service("Redis", base.redis_url.get_secret_value(), 6379)
    dsn = with_database(base.dsn(), f"orderflow_test_{RUN_ID}")
    return base.model_copy(
        update={
            "database_url": type(base.database_url)(dsn),
            "exchange": f"orderflow.test.{RUN_ID}",
            "queue_prefix": f"orderflow.test.{RUN_ID}",
            # Redis keys of this run only; limits the shared client never reaches (the
            # limiter's own tests build apps with small ones).
            "redis_key_prefix": f"orderflow:test:{RUN_ID}",
            # The broker deletes this run's queues once unused for 15 minutes.
            "queue_expires_ms": 15 * 60 * 1000,
            # Many processes share one PostgreSQL (max_connections 100) during a run.
            "db_pool_max": 5,
            "rate_limits": dict.fromkeys(DEFAULT_RATE_LIMITS, "100000/1"),
            # The payment gateway of this run (tests/integration/conftest.py serves it).
            "gateway_url": f"http://127.0.0.1:{_free_port()}",
        }
    )


async def migrate(dsn: str, revision: str = "head", *, down: bool = False) -> None:
    """Run Alembic against ``dsn`` (in a thread: Alembic runs its own event loop)."""
    from alembic import command

    from orderflow.migrations import alembic_config

    config = alembic_config(dsn)
    action = command.downgrade if down else command.upgrade
    await asyncio.to_thread(action, config, revision)  # type: ignore[arg-type]


async def delete_run_queues(prefix: str, amqp_url: str) -> int:
    """Delete every queue whose name starts with ``prefix`` (this run's); the count.

    Each test run declares hundreds of queues; a broker keeps quorum queues (Raft groups, file
    handles) until deleted, and a default RabbitMQ with ~1000 file handles stops accepting
    connections long before that many accumulate. ``x-expires`` is the fallback for runs that
    die before this cleanup.
    """
    import aio_pika

    try:
        listed = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "list_queues",
            "name",
            "--quiet",
            "--no-table-headers",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(listed.communicate(), timeout=60)
    except (OSError, TimeoutError):
        return 0  # no local rabbitmqctl (a remote broker): x-expires cleans up
    names = [n for n in out.decode().split() if n.startswith(prefix)]
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    return len(names)


@pytest.fixture(scope="session", autouse=True)
async def broker_cleanup(settings: Settings) -> AsyncIterator[None]:
    """After the run: delete the queues it declared."""
    yield
    await delete_run_queues(settings.queue_prefix, settings.rabbitmq_url.get_secret_value())


def settings_apart(settings: Settings, suffix: str, **update: object) -> Settings:
    """This run's settings with a database, an exchange and queues of their own (``suffix``
    added to their names): a running system must not see the rows other tests write."""
    dsn = with_database(settings.dsn(), f"{database_name(settings.dsn())}_{suffix}")
    return settings.model_copy(
        update={
            "database_url": SecretStr(dsn),
            "exchange": f"{settings.exchange}.{suffix}",
            "queue_prefix": f"{settings.queue_prefix}.{suffix}",
            # Its ``orderflow up`` starts a payment gateway of its own: on a port of its own.
            "gateway_url": f"http://127.0.0.1:{_free_port()}",
            **update,
        }
    )


@contextlib.asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """The database ``dsn`` names, made and migrated to the head revision; dropped afterwards
    unless ORDERFLOW_KEEP_TEST_DB is set."""
    await ensure_database(dsn)
    await migrate(dsn)
    yield dsn
    if not os.environ.get("ORDERFLOW_KEEP_TEST_DB"):
        await drop_database(dsn)


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, *, max_size: int) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the settings' database, closed afterwards."""
    pool = await create_pool(settings, min_size=1, max_size=max_size)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[str]:
    """A fresh database at the head revision, dropped at the end of the run."""
    async with fresh_database(settings.dsn()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def pool(settings: Settings, database: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(settings, max_size=10) as pool:
        yield pool
