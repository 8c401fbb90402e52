"""Fault injection: processes killed mid-flight, the broker restarted under load.

Slow by nature (marked ``fault``), never skipped. A test that stops RabbitMQ starts it again in
``finally`` and waits until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY

from orderflow.kernel.database import create_pool
from orderflow.kernel.topology import Names
from orderflow.operations.dead_letters import process
from orderflow.settings import Settings
from tests.backbone_app import make_registry
from tests.integration.backbone.broker import rabbitmqctl, start_broker_app
from tests.integration.backbone.helpers import (
    all_applied_once,
    all_published,
    applied_counts,
    emit,
    eventually,
    queue_counts,
    running,
    spawn,
)

pytestmark = pytest.mark.fault


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(10)


async def test_relay_killed_after_publishing_before_marking_is_applied_once(
    bb_settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    marker = tmp_path / "published"
    async with running(bb_settings, pool, make_registry(["alpha"]), relays=0):
        ids = await emit(pool, ["ok"] * 5)
        relay = spawn(bb_settings, "relay", "--stall-marker", str(marker))
        try:
            await eventually(_exists(marker))
            # The broker confirmed the batch and the handler applied it ...
            await eventually(lambda: all_applied_once(pool, "alpha", ids))
        finally:
            _kill(relay)  # ... and the relay dies before marking it published.
        unmarked = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE event_id = ANY($1) AND published_at IS NULL", ids
        )
        assert unmarked == 5
        before = _duplicates("alpha")
        async with running(bb_settings, pool, make_registry([]), workers=0):
            await eventually(lambda: all_published(pool, ids))
            await eventually(lambda: _true(_duplicates("alpha") >= before + 5))
    assert await applied_counts(pool, "alpha") == dict.fromkeys(ids, 1)


async def test_worker_killed_mid_handler_is_redelivered_and_applied_once(
    bb_settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(bb_settings, pool, make_registry(["slow"]), workers=0):
        worker = spawn(bb_settings, "worker", "--handlers", "slow", BACKBONE_MARKERS=str(tmp_path))
        try:
            event_id = await _slow_event_started(bb_settings, pool, tmp_path, ms=2000)
        finally:
            _kill(worker)  # SIGKILL in the middle of the handler's transaction
        assert await applied_counts(pool, "slow") == {}
        async with running(bb_settings, pool, make_registry(["slow"]), relays=0):
            await eventually(lambda: all_applied_once(pool, "slow", [event_id]))
    # The broker marks the second delivery as a redelivery, and the worker passes that on
    # (a handler with a prepare step looks it up in the inbox first because of it).
    redelivered = await pool.fetchval(
        "SELECT redelivered FROM backbone_applied WHERE event_id = $1", event_id
    )
    assert redelivered is True


async def test_message_that_keeps_crashing_its_worker_ends_in_the_dead_letters(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    settings = bb_settings.model_copy(update={"delivery_limit": 2})
    names = Names.from_settings(settings)
    async with running(settings, pool, make_registry(["slow"]), workers=0):
        [event_id] = await emit(pool, ["crash"])

        async def dead_lettered() -> bool:
            try:
                return (await queue_counts(settings, names.dead_letters))[0] == 1
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return False  # the first worker has not declared it yet

        # Each worker dies on the message; the broker dead-letters it (asynchronously) once
        # the delivery limit is passed, and the next worker then has nothing to die on.
        for _ in range(8):
            worker = spawn(settings, "worker", "--handlers", "slow")
            try:
                await eventually(functools.partial(_exited_or, worker, dead_lettered), timeout=20)
            finally:
                _kill(worker)
            if await dead_lettered():
                break
            assert worker.returncode == 3  # it died on the message
    [letter] = await process(settings, action="list")
    assert (letter.message_id, letter.handler) == (str(event_id), "slow")
    assert letter.error.startswith("broker: delivery_limit")


async def test_sigterm_lets_the_worker_finish_in_flight_work_and_exit_promptly(
    bb_settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(bb_settings, pool, make_registry(["slow"]), workers=0):
        worker = spawn(bb_settings, "worker", "--handlers", "slow", BACKBONE_MARKERS=str(tmp_path))
        try:
            event_id = await _slow_event_started(bb_settings, pool, tmp_path, ms=500)
            worker.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.to_thread(worker.wait, 15)
            assert time.monotonic() - started < bb_settings.worker_shutdown_timeout_s + 2
        finally:
            _kill(worker)
    assert code == 0
    assert await applied_counts(pool, "slow") == {event_id: 1}


@pytest.mark.stops_services
@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batched"])
async def test_broker_restart_under_load_loses_nothing_and_every_worker_consumes_again(
    bb_settings: Settings, pool: asyncpg.Pool, batch: bool
) -> None:
    # Batched: a batch acked by one frame on a channel the restart closed must come back.
    registry = make_registry(["alpha", "beta"], batch=batch)
    ids: list[uuid.UUID] = []
    async with running(bb_settings, pool, registry, workers=2, relays=2):

        async def load() -> None:
            for _ in range(40):
                ids.extend(await emit(pool, ["ok"] * 10))
                await asyncio.sleep(0.05)

        producer = asyncio.create_task(load())
        await asyncio.sleep(0.5)
        try:
            await rabbitmqctl("stop_app")
            await asyncio.sleep(1.0)  # events keep committing while the broker is away
        finally:
            await start_broker_app()
        await producer
        for handler in ("alpha", "beta"):
            await eventually(functools.partial(all_applied_once, pool, handler, ids), timeout=60)
            await eventually(functools.partial(_consumers, bb_settings, handler, 2), timeout=30)
    assert len(ids) == 400


async def _slow_event_started(
    settings: Settings, pool: asyncpg.Pool, markers: Path, *, ms: int
) -> uuid.UUID:
    """Once the spawned worker consumes, emit a slow event and wait until its handler runs."""
    await eventually(lambda: _consumers(settings, "slow", 1))
    [event_id] = await emit(pool, [f"slow:{ms}"])
    await eventually(_exists(markers / f"slow.{event_id}.started"))
    return event_id


async def _exited_or(
    proc: subprocess.Popen[bytes], condition: Callable[[], Awaitable[bool]]
) -> bool:
    """Whether ``proc`` has exited, else whether ``condition()`` holds."""
    return proc.poll() is not None or await condition()


def _exists(path: Path) -> Callable[[], Awaitable[bool]]:
    async def exists() -> bool:
        return path.exists()

    return exists


async def _true(value: bool) -> bool:
    return value


def _duplicates(handler: str) -> float:
    labels = {"handler": handler, "outcome": "duplicate"}
    return REGISTRY.get_sample_value("orderflow_events_consumed_total", labels) or 0.0


async def _consumers(settings: Settings, handler: str, n: int) -> bool:
    queue = Names.from_settings(settings).handler(handler).work
    try:
        _, consumers = await queue_counts(settings, queue)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False  # not declared yet
    return consumers == n


async def test_database_connections_dropped_under_load_lose_nothing(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # No polling to fall back on: the relay must re-open its LISTEN connection.
    settings = bb_settings.model_copy(update={"relay_poll_interval_s": 60.0})
    runtime_pool = await create_pool(settings, min_size=2, max_size=10)
    try:
        await _drop_sessions_under_load(settings, pool, runtime_pool)
    finally:
        await runtime_pool.close()


async def _drop_sessions_under_load(
    settings: Settings, pool: asyncpg.Pool, runtime_pool: asyncpg.Pool
) -> None:
    ids: list[uuid.UUID] = []
    async with running(settings, runtime_pool, make_registry(["alpha"]), workers=1, relays=1):
        for round_ in range(3):
            ids += await emit(pool, ["ok"] * 100)
            await asyncio.sleep(0.05 * round_)
            # Every other session on this database dies: the relay's LISTEN connection, its
            # pool, the worker's pool (what a PostgreSQL restart or failover does to them).
            killer = await asyncpg.connect(settings.dsn())
            try:
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await killer.close()
            await pool.expire_connections()  # the test's own pool starts afresh
        await eventually(lambda: all_applied_once(pool, "alpha", ids), timeout=30)
        await asyncio.sleep(0.5)
        last = await emit(pool, ["ok"])
        await eventually(lambda: all_applied_once(pool, "alpha", last), timeout=5)
    dead_letters = Names.from_settings(settings).dead_letters
    assert (await queue_counts(settings, dead_letters))[0] == 0  # retried, not dead-lettered
