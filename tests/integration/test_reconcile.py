"""The reconciler: an order whose next event was lost is re-driven from its last event, and
the inbox keeps the re-drive from applying anything twice (driven in-process, tests/pump.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.events import HAPPY_PATH
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.kernel.handlers import Registry
from orderflow.operations.reconcile import reconcile
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.pump import pump

# Orders of the other tests of this run are younger than this: only the orders a test here
# backdates past it look stuck.
STALL_S = 3600.0


@pytest.fixture(scope="module")
def reconciling(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"autopilot": True, "autopilot_delay_s": 0.0, "reconcile_stall_s": STALL_S}
    )


@pytest.fixture(scope="module")
def registry(
    reconciling: Settings, pool: asyncpg.Pool, product_cache: RedisProductCache
) -> Registry:
    return build_registry(Deps(settings=reconciling, pool=pool, cache=product_cache))


async def _order(client: httpx.AsyncClient, *, token: str | None = "pm_approve") -> dict[str, Any]:
    product = await make_product(client, price=900, stock=10)
    customer = await make_customer(client)
    return await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=token
    )


async def _stall(pool: asyncpg.Pool, order_id: uuid.UUID) -> None:
    """Make the order and its published events look twice the allowance old."""
    await pool.execute(
        "UPDATE orders SET updated_at = updated_at - make_interval(secs => $2) WHERE id = $1",
        order_id,
        2 * STALL_S,
    )
    await pool.execute(
        "UPDATE outbox SET published_at = published_at - make_interval(secs => $2) "
        "WHERE order_id = $1 AND published_at IS NOT NULL",
        order_id,
        2 * STALL_S,
    )


async def _timeline(client: httpx.AsyncClient, order_id: uuid.UUID) -> list[str]:
    body = (await client.get(f"/api/v1/orders/{order_id}")).json()
    return [t["event"] for t in body["timeline"]]


async def test_order_whose_next_event_was_lost_is_redriven_to_delivered_applying_nothing_twice(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry, reconciling: Settings
) -> None:
    order_id = uuid.UUID((await _order(client))["id"])
    # order.paid reaches the notifications but its copy for the reservation is lost.
    without_reservation = registry.select(n for n in registry.names if n != "inventory.reserve")
    await pump(pool, without_reservation, [order_id])
    assert (await client.get(f"/api/v1/orders/{order_id}")).json()["status"] == "paid"
    await _stall(pool, order_id)

    redriven = await reconcile(pool, reconciling)
    assert [(r.order_id, r.event_type) for r in redriven] == [(order_id, "order.paid")]
    assert await reconcile(pool, reconciling) == []  # re-driven once per allowance

    applied = await pump(pool, registry, [order_id])
    assert ("order.paid", "notifications.send", "duplicate") in [
        (event, handler, outcome.value) for event, handler, outcome in applied
    ]
    assert await _timeline(client, order_id) == list(HAPPY_PATH)
    moves = await pool.fetchval(
        "SELECT count(*) FROM stock_movements WHERE order_id = $1 AND kind = 'reserve'", order_id
    )
    assert moves == 1


async def test_cancelled_order_still_holding_an_authorization_is_redriven_to_its_void(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry, reconciling: Settings
) -> None:
    order_id = uuid.UUID((await _order(client))["id"])
    await pump(pool, registry.select(["payments.initiate", "payments.charge"]), [order_id])
    cancelled = await client.post(f"/api/v1/orders/{order_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await pump(pool, registry.select([]), [order_id])  # order.cancelled lost on its way
    await _stall(pool, order_id)

    redriven = await reconcile(pool, reconciling)
    assert [(r.order_id, r.event_type) for r in redriven] == [(order_id, "order.cancelled")]
    await pump(pool, registry, [order_id])
    kinds = await pool.fetch(
        "SELECT kind FROM payment_transactions WHERE order_id = $1 ORDER BY id", order_id
    )
    assert [r["kind"] for r in kinds] == ["authorize", "void"]


async def test_orders_within_their_allowance_or_waiting_for_a_person_are_left_alone(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry, reconciling: Settings
) -> None:
    fresh = uuid.UUID((await _order(client))["id"])
    await pump(pool, registry.select(["payments.initiate"]), [fresh])  # payment_pending, now
    unpaid = uuid.UUID((await _order(client, token=None))["id"])
    await pump(pool, registry, [unpaid])
    await _stall(pool, unpaid)  # the customer's move, and the expiry sweep's
    reserved = uuid.UUID((await _order(client))["id"])
    await pump(
        pool,
        registry.select(n for n in registry.names if not n.startswith("autopilot")),
        [reserved],
    )
    await _stall(pool, reserved)

    # Without the autopilot, the reserved order waits for the warehouse staff.
    assert await reconcile(pool, reconciling.model_copy(update={"autopilot": False})) == []
    # With it, the warehouse's step is a machine's: re-driven.
    redriven = await reconcile(pool, reconciling)
    assert [(r.order_id, r.event_type) for r in redriven] == [(reserved, "inventory.checked")]
