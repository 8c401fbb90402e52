"""Fixtures for the event-backbone tests: each test gets its own exchange and queue names
(under the run's), fast retry and reconnect timings, and its broker objects deleted after."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from orderflow.adapters.rabbitmq.topology import Names, delete_topology
from orderflow.settings import Settings
from tests.backbone_app import APPLIED_TABLE
from tests.conftest import require_service

_serial = itertools.count(1)
TEST_HANDLERS = ("alpha", "beta", "gamma", "slow", "dead")


@pytest.fixture
async def bb_settings(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settings]:
    """This test's settings; stale outbox rows of other tests are marked published first."""
    require_service("RabbitMQ", settings.rabbitmq_url.get_secret_value(), 5672)
    n = next(_serial)
    mine = settings.model_copy(
        update={
            "exchange": f"{settings.exchange}.{n}",
            "queue_prefix": f"{settings.queue_prefix}.{n}",
            "retry_base_delay_ms": 100,
            "retry_max_attempts": 4,
            "relay_poll_interval_s": 0.5,
            "reconnect_max_backoff_s": 0.5,
            "worker_shutdown_timeout_s": 5.0,
        }
    )
    await pool.execute(APPLIED_TABLE)
    await pool.execute("TRUNCATE backbone_applied")
    await pool.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
    yield mine
    connection = await aio_pika.connect(mine.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, Names.from_settings(mine), TEST_HANDLERS)
