"""Webhooks from the real processes: a worker of ``orderflow up`` delivers every event of a
customer's order to its endpoint, signed, in timeline order."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from orderflow.domain.events import HAPPY_PATH
from tests.e2e.conftest import wait_for_status
from tests.factories import make_customer, make_product, place_order
from tests.integration.test_webhooks import Receiver, receiving

pytestmark = pytest.mark.e2e


async def test_the_workers_deliver_an_orders_events_signed_and_in_order(
    http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(http)
    customer = await make_customer(http)
    receiver = Receiver()
    receiver.up.set()
    async with receiving(receiver) as url:
        created = await http.post(
            "/api/v1/webhooks/subscriptions", json={"url": url, "customer_id": customer["id"]}
        )
        assert created.status_code == 201, created.text
        receiver.secret = created.json()["secret"]
        order = await place_order(http, customer_id=customer["id"], lines=[(product["id"], 1)])
        await wait_for_status(http, order["id"], {"delivered"})
        async with asyncio.timeout(20):
            while len(receiver.accepted) < len(HAPPY_PATH):
                await asyncio.sleep(0.05)
    assert receiver.rejected == 0
    assert [p["type"] for p in receiver.accepted] == list(HAPPY_PATH)
    ids = await pool.fetch(
        "SELECT id FROM order_timeline WHERE order_id = $1 ORDER BY id", uuid.UUID(order["id"])
    )
    assert [p["data"]["id"] for p in receiver.accepted] == [r["id"] for r in ids]
