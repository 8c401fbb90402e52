"""The whole system, as deployed: orders placed over HTTP run to their terminal state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.domain.events import HAPPY_PATH
from tests.e2e.conftest import UNPAID_TTL_S, wait_for_status
from tests.factories import make_customer, make_product, place_order

pytestmark = pytest.mark.e2e

TERMINAL = {"delivered", "cancelled"}


async def _money(pool: asyncpg.Pool, order_ids: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT kind, coalesce(sum(amount), 0)::bigint AS amount FROM payment_transactions "
        "WHERE order_id = ANY($1::uuid[]) GROUP BY kind",
        [uuid.UUID(o) for o in order_ids],
    )
    return {r["kind"]: r["amount"] for r in rows}


@pytest.mark.parametrize("token", ["pm_approve", "pm_flaky", "pm_slow"])
async def test_order_placed_over_http_is_delivered_with_all_eight_events(
    token: str, http: httpx.AsyncClient
) -> None:
    product = await make_product(http, price=1500, stock=10)
    customer = await make_customer(http)
    order = await place_order(
        http, customer_id=customer["id"], lines=[(product["id"], 2)], payment_token=token
    )
    done = await wait_for_status(http, order["id"], TERMINAL)
    assert done["status"] == "delivered"
    timeline = done["timeline"]
    assert isinstance(timeline, list)
    assert [t["event"] for t in timeline] == list(HAPPY_PATH)


async def test_declined_then_paid_again_is_delivered(http: httpx.AsyncClient) -> None:
    product = await make_product(http)
    customer = await make_customer(http)
    order = await place_order(
        http, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token="pm_decline"
    )
    await wait_for_status(http, order["id"], {"awaiting_payment"})
    paid = await http.post(
        f"/api/v1/orders/{order['id']}/pay", json={"payment_token": "pm_approve"}
    )
    assert paid.status_code == 200, paid.text
    assert (await wait_for_status(http, order["id"], TERMINAL))["status"] == "delivered"


async def test_out_of_stock_is_voided_never_captured_and_cancelled_with_stock_unchanged(
    http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(http, price=250, stock=1)
    customer = await make_customer(http)
    order = await place_order(http, customer_id=customer["id"], lines=[(product["id"], 3)])
    done = await wait_for_status(http, order["id"], {"cancelled"})
    assert done["cancel_reason"] == "out_of_stock"
    await _wait_released(pool, order["id"])
    # Authorized, never captured: the authorization was voided.
    assert await _money(pool, [order["id"]]) == {"authorize": 750, "void": 750}
    assert (await http.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 1


async def _wait_released(pool: asyncpg.Pool, order_id: str, kinds: str = "void,refund") -> None:
    """Wait for the order's money to be released: its authorization voided or its capture
    refunded (``kinds``: which of them may end it)."""
    for _ in range(200):
        if await pool.fetchval(
            "SELECT count(*) FROM payment_transactions WHERE order_id = $1 AND kind = ANY($2)",
            uuid.UUID(order_id),
            kinds.split(","),
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} was never voided or refunded")


async def _wait_captured(pool: asyncpg.Pool, order_id: str) -> None:
    await _wait_released(pool, order_id, kinds="capture")


@pytest.mark.parametrize("state", ["reserved", "prepared"])
async def test_cancel_while_in_the_warehouse_releases_the_money_and_the_stock(
    state: str, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(http, price=600, stock=5)
    customer = await make_customer(http)
    order = await place_order(http, customer_id=customer["id"], lines=[(product["id"], 2)])
    await wait_for_status(http, order["id"], {state}, timeout_s=15)
    cancelled = await http.post(f"/api/v1/orders/{order['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await _wait_released(pool, order["id"])
    for _ in range(200):
        if (await http.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 5:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("reserved stock was not released")
    money = await _money(pool, [order["id"]])
    # Voided if the cancel came before the capture, else captured and refunded: nothing kept.
    assert money in (
        {"authorize": 1200, "void": 1200},
        {"authorize": 1200, "capture": 1200, "refund": 1200},
    )


async def test_cancelling_a_shipped_order_is_refused(http: httpx.AsyncClient) -> None:
    product = await make_product(http)
    customer = await make_customer(http)
    order = await place_order(http, customer_id=customer["id"], lines=[(product["id"], 1)])
    await wait_for_status(http, order["id"], {"shipped", "delivered"}, timeout_s=15)
    refused = await http.post(f"/api/v1/orders/{order['id']}/cancel")
    assert refused.status_code == 409


async def test_100_concurrent_orders_for_10_units_balance_to_the_unit_and_the_cent(
    http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(http, price=1999, stock=10)
    customers = await asyncio.gather(*(make_customer(http) for _ in range(20)))

    async def order(n: int) -> dict[str, Any]:
        return await place_order(
            http, customer_id=customers[n % 20]["id"], lines=[(product["id"], 1)]
        )

    placed = await asyncio.gather(*(order(n) for n in range(100)))
    ids = [o["id"] for o in placed]
    finals = await asyncio.gather(*(wait_for_status(http, i, TERMINAL, timeout_s=90) for i in ids))
    statuses = [f["status"] for f in finals]
    assert statuses.count("delivered") == 10
    assert statuses.count("cancelled") == 90
    assert all(f["cancel_reason"] == "out_of_stock" for f in finals if f["status"] == "cancelled")
    assert (await http.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 0
    delivered = {f["id"] for f in finals if f["status"] == "delivered"}
    for i in ids:
        await (_wait_captured(pool, i) if i in delivered else _wait_released(pool, i))
    money = await _money(pool, ids)
    # The ten that shipped were captured; the ninety short of stock were never charged.
    assert money == {"authorize": 100 * 1999, "capture": 10 * 1999, "void": 90 * 1999}


async def test_unpaid_order_expires_and_is_cancelled(http: httpx.AsyncClient) -> None:
    product = await make_product(http)
    customer = await make_customer(http)
    order = await place_order(
        http, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
    )
    done = await wait_for_status(http, order["id"], {"cancelled"}, timeout_s=UNPAID_TTL_S + 10)
    assert done["cancel_reason"] == "payment_expired"
