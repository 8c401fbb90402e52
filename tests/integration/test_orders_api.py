from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import httpx

from orderflow.domain.pricing import StandardPricing
from orderflow.entrypoints.api.app import create_app
from orderflow.inventory import store as inventory
from orderflow.ordering import placement as ordering
from orderflow.ordering import store as orders
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer, running


async def test_placed_order_is_stored_with_lines_and_exactly_one_outbox_row(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    a = await make_product(client, price=1250)
    b = await make_product(client, price=99)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(a["id"], 2), (b["id"], 3)]
    )

    assert order["status"] == "created"
    assert (order["total"], order["currency"]) == (2797, "EUR")
    assert [t["event"] for t in order["timeline"]] == ["order.created"]
    oid = uuid.UUID(order["id"])
    assert await pool.fetchval("SELECT total FROM orders WHERE id = $1", oid) == 2797
    assert await pool.fetchval("SELECT count(*) FROM order_lines WHERE order_id = $1", oid) == 2
    outbox = await pool.fetch("SELECT event_type, envelope FROM outbox WHERE order_id = $1", oid)
    assert [r["event_type"] for r in outbox] == ["order.created"]
    assert outbox[0]["envelope"]["payload"]["total"] == 2797

    read = (await client.get(f"/api/v1/orders/{order['id']}")).json()
    assert read["lines"][0]["unit_price"] == 1250
    assert read["timeline"][0]["event"] == "order.created"


async def test_prices_come_from_the_catalogue_not_the_client(client: httpx.AsyncClient) -> None:
    product = await make_product(client, price=500)
    customer = await make_customer(client)
    body = {
        "customer_id": customer["id"],
        "lines": [{"product_id": product["id"], "quantity": 1, "unit_price": 1}],
    }
    refused = await client.post("/api/v1/orders", json=body)
    assert refused.status_code == 422  # a client-sent price is not even accepted
    await client.patch(f"/api/v1/products/{product['id']}", json={"price": 700})
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    assert order["total"] == 700


async def test_order_without_payment_token_awaits_payment(client: httpx.AsyncClient) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
    )
    assert order["status"] == "awaiting_payment"


async def test_cancel_before_shipping_writes_order_cancelled(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    cancelled = await client.post(f"/api/v1/orders/{order['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "customer_request"
    types = await pool.fetch(
        "SELECT event_type FROM outbox WHERE order_id = $1 ORDER BY id", uuid.UUID(order["id"])
    )
    assert [r["event_type"] for r in types] == ["order.created", "order.cancelled"]

    again = await client.post(f"/api/v1/orders/{order['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"].endswith("/illegal-transition")


async def test_shipped_order_cannot_be_cancelled(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await pool.execute("UPDATE orders SET status = 'shipped' WHERE id = $1", uuid.UUID(order["id"]))
    refused = await client.post(f"/api/v1/orders/{order['id']}/cancel")
    assert refused.status_code == 409
    assert (
        await pool.fetchval("SELECT status FROM orders WHERE id = $1", uuid.UUID(order["id"]))
        == "shipped"
    )


async def test_listing_filters_by_customer_and_status_with_keyset_pages(
    client: httpx.AsyncClient,
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    placed = [
        await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
        for _ in range(5)
    ]
    await client.post(f"/api/v1/orders/{placed[0]['id']}/cancel")

    seen: list[str] = []
    cursor = None
    while True:
        params = {"customer_id": customer["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/orders", params=params)).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [o["id"] for o in reversed(placed)]

    cancelled = (
        await client.get(
            "/api/v1/orders", params={"customer_id": customer["id"], "status": "cancelled"}
        )
    ).json()
    assert [o["id"] for o in cancelled["items"]] == [placed[0]["id"]]


async def test_timeline_pages_oldest_first(client: httpx.AsyncClient) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await client.post(f"/api/v1/orders/{order['id']}/cancel")
    first = (await client.get(f"/api/v1/orders/{order['id']}/events", params={"limit": 1})).json()
    assert [e["event"] for e in first["items"]] == ["order.created"]
    second = (
        await client.get(
            f"/api/v1/orders/{order['id']}/events",
            params={"limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [e["event"] for e in second["items"]] == ["order.cancelled"]


async def test_placing_an_order_costs_the_same_round_trips_for_1_or_50_lines(
    client: httpx.AsyncClient, settings: object
) -> None:
    from orderflow.kernel.database import create_pool

    products = [await make_product(client) for _ in range(50)]
    customer = await make_customer(client)
    single = await create_pool(settings, min_size=1, max_size=1)  # type: ignore[arg-type]
    queries: list[str] = []
    try:
        async with single.acquire() as conn:
            # The relays' wake-up NOTIFY is sent once per burst per process, not per order.
            conn.add_query_logger(
                lambda record: (
                    None if record.query.startswith("NOTIFY") else queries.append(record.query)
                )
            )
        counts = []
        for n in (1, 1, 50):  # the first call also warms the connection's type cache
            queries.clear()
            await ordering.place_order(
                single,
                customer_id=uuid.UUID(customer["id"]),
                lines=[ordering.LineRequest(uuid.UUID(p["id"]), 1) for p in products[:n]],
                payment_token="pm_approve",
                pricing=StandardPricing(),
            )
            counts.append(len(queries))
    finally:
        await single.close()
    # Without a product cache: read the products, then one statement writes everything.
    assert counts[1] == counts[2] == 2


async def test_orders_are_placed_while_the_saga_holds_their_products_and_customer(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The saga's row locks (an order being advanced, products being reserved) are NO KEY
    UPDATE locks: they exclude other writers of those rows, but not the foreign-key checks of
    a new order, its lines or a notification, which would otherwise queue behind the saga's
    commits."""
    product = await make_product(client, stock=100)
    customer = await make_customer(client)
    first = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    async with pool.acquire() as conn, conn.transaction():
        await orders.get(conn, uuid.UUID(first["id"]), lock=True)
        await inventory.lock_stock_of(conn, [uuid.UUID(first["id"])])
        async with asyncio.timeout(5):
            second = await place_order(
                client, customer_id=customer["id"], lines=[(product["id"], 2)]
            )
            await pool.execute(
                "INSERT INTO notifications (order_id, event_id, recipient, channel, subject) "
                "VALUES ($1, $2, 'customer', 'log', 'test')",
                uuid.UUID(first["id"]),
                uuid.uuid4(),
            )
    assert second["status"] == first["status"]


async def test_a_statement_cut_off_by_the_database_is_a_503_and_changes_nothing(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    """PostgreSQL restarting terminates the statements in flight: the request whose
    statement was cut off gets a 503 problem with Retry-After (never a 500), nothing of it is
    stored, and the next request succeeds on a fresh connection."""
    product = await make_product(client, price=400)
    customer = await make_customer(client)
    settings = app_settings()
    headers = {"Authorization": f"Bearer {await bearer(pool, 'admin')}"}
    body = {"customer_id": customer["id"], "lines": [{"product_id": product["id"], "quantity": 1}]}
    count = "SELECT count(*) FROM orders WHERE customer_id = $1"
    async with (
        running(create_app(settings)) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http,
    ):
        assert (await http.post("/api/v1/orders", json=body)).status_code == 201
        before = await pool.fetchval(count, uuid.UUID(customer["id"]))
        async with pool.acquire() as holder, holder.transaction():
            # the placement's foreign-key check waits for this row lock: cut it off there
            await holder.execute(
                "SELECT FROM products WHERE id = $1 FOR UPDATE", uuid.UUID(product["id"])
            )
            holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
            attempt = asyncio.create_task(http.post("/api/v1/orders", json=body))
            for _ in range(300):
                # The session waiting for this lock (the API names its sessions itself now,
                # so the application name of the DSN cannot find it).
                cut = await pool.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE $1 = ANY(pg_blocking_pids(pid))",
                    holder_pid,
                )
                if cut:
                    break
                await asyncio.sleep(0.01)
            assert cut == 1
        refused = await attempt
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["type"].endswith("/temporarily-unavailable")
        assert await pool.fetchval(count, uuid.UUID(customer["id"])) == before
        again = await http.post("/api/v1/orders", json=body)
        assert again.status_code == 201, again.text
        assert await pool.fetchval(count, uuid.UUID(customer["id"])) == before + 1


async def test_delivery_without_a_body_names_the_carrier_that_shipped_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    oid = uuid.UUID(order["id"])
    await pool.execute("UPDATE orders SET status = 'prepared' WHERE id = $1", oid)
    shipped = await client.post(f"/api/v1/orders/{oid}/ship", json={"carrier": "DHL Express"})
    assert shipped.status_code == 200, shipped.text
    delivered = await client.post(f"/api/v1/orders/{oid}/deliver")
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["timeline"][-1]["event"] == "order.delivered"
    assert delivered.json()["timeline"][-1]["data"]["carrier"] == "DHL Express"
