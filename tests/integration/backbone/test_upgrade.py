"""Upgrading a broker declared before ADR 0028: ``orderflow migrate`` retires the retry and
delay queues (what they hold moves to the work queue, then they are deleted; other queues are
left alone), and a work queue declared with at-least-once dead-lettering is kept as it is."""

from __future__ import annotations

import functools
import re
from typing import Any

import aio_pika
import asyncpg
import pytest
import structlog.testing

from orderflow.kernel.topology import Names, declare_topology
from orderflow.kernel.waiting_rooms import retire_waiting_rooms
from orderflow.settings import Settings
from tests.backbone_app import EVENT
from tests.integration.backbone.broker import rabbitmqctl
from tests.integration.backbone.helpers import eventually, queue_depth


async def test_old_waiting_rooms_are_emptied_into_their_work_queue_and_deleted(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    settings = bb_settings.model_copy(
        update={"retry_base_delay_ms": 60_000, "retry_max_attempts": 2}
    )
    names = Names.from_settings(settings)
    work = names.handler("alpha").work
    expires: dict[str, Any] = {"x-expires": 5 * 60 * 1000}
    back = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work}
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, names, {"alpha": [EVENT]}, delivery_limit=5)
        # As the workers of before declared them: a quorum retry room holding a retry (its
        # TTL a minute away), a classic delay room, and a queue that only looks like one.
        retry = f"{work}.retry.60000ms.q"
        await channel.declare_queue(
            retry,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-message-ttl": 60_000, **back, **expires},
        )
        await channel.declare_queue(
            f"{work}.delay", durable=True, arguments={"x-queue-type": "classic", **expires}
        )
        bystander = f"{work}.retry.1000ms.kept"
        await channel.declare_queue(bystander, durable=True, arguments=expires)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="waiting-retry", headers={"x-orderflow-attempt": 2}),
            retry,
        )

        retired = await retire_waiting_rooms(connection, names, ["alpha", "beta"], settings)

        assert sorted(retired) == sorted([retry, f"{work}.delay"])
        assert await queue_depth(settings, work) == 1  # the retry, early rather than never
        moved = await (await connection.channel()).declare_queue(work, passive=True)
        message = await moved.get(no_ack=True)
        assert message.message_id == "waiting-retry"
        assert (message.headers or {}).get("x-orderflow-attempt") == 2
        for gone in retired:
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).declare_queue(gone, passive=True)
        assert await queue_depth(settings, bystander) == 0  # still there
        await channel.queue_delete(bystander)


async def test_new_work_queues_dead_letter_without_the_dlx_supervisor_and_old_ones_are_kept(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names.from_settings(bb_settings)
    old = names.handler("alpha").work
    expires: dict[str, Any] = {"x-expires": names.expires_ms} if names.expires_ms else {}
    connection = await aio_pika.connect(bb_settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        # As a release before ADR 0028 declared it.
        await channel.declare_queue(
            old,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names.dead_letters,
                "x-delivery-limit": 5,
                **expires,
            },
        )
        with structlog.testing.capture_logs() as logs:
            await declare_topology(
                channel, names, {"alpha": [EVENT], "beta": [EVENT]}, delivery_limit=5
            )
        assert [e["queue"] for e in logs if e["event"] == "work_queue_keeps_old_arguments"] == [old]
        # Both bound and usable on the same channel, which the refusal had closed.
        exchange = await channel.get_exchange(names.exchange)
        await exchange.publish(aio_pika.Message(b"{}"), EVENT)
        for handler in ("alpha", "beta"):
            await eventually(
                functools.partial(_depth_is, bb_settings, names.handler(handler).work, 1)
            )
    arguments = await _arguments(names.handler("beta").work)
    assert "x-dead-letter-strategy" not in arguments  # at-most-once: no dlx supervisor needed
    assert arguments["x-dead-letter-routing-key"] == names.dead_letters


async def _depth_is(settings: Settings, queue: str, n: int) -> bool:
    return await queue_depth(settings, queue) == n


async def _arguments(queue: str) -> dict[str, Any]:
    out = await rabbitmqctl("list_queues", "name", "arguments", "--silent", timeout=30)
    for line in out.splitlines():
        name, _, arguments = line.partition("\t")
        if name == queue:
            return dict(re.findall(r'\{"([^"]+)",(?:"([^"]*)"|[^}]*)\}', arguments))
    raise AssertionError(f"{queue} not listed")
