"""Live order streams (SSE) against a real HTTP server of the app, PostgreSQL and Redis.

The in-process ASGI transport buffers whole responses, so these tests serve the app with
uvicorn on a local port and read the streams over TCP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from orderflow.access import keys
from orderflow.bench.servers import free_port
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.ordering import feed_store as timeline_feed
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.http_server import serving
from tests.integration.conftest import bearer
from tests.sse import Frame, frames


@asynccontextmanager
async def serving_api(settings: Settings) -> AsyncIterator[str]:
    """The app (with its lifespan) on a free port; yields its base URL."""
    async with serving(create_app(settings), lifespan="on") as url:
        yield url


@pytest.fixture
async def api(app_settings: Callable[..., Settings], database: str) -> AsyncIterator[str]:
    async with serving_api(app_settings(stream_heartbeat_s=0.3, stream_max_per_key=2)) as url:
        yield url


def _client(base: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def _read(
    http: httpx.AsyncClient,
    path: str,
    *,
    until: Callable[[list[Frame]], bool],
    headers: dict[str, str] | None = None,
    timeout_s: float = 15,
) -> list[Frame]:
    """Frames (comments left out) of one connection, until ``until`` holds or it ends."""
    got: list[Frame] = []
    async with asyncio.timeout(timeout_s), http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for frame in frames(response):
            if frame.comment:
                continue
            got.append(frame)
            if until(got):
                break
    return got


def _entries(got: list[Frame]) -> list[dict[str, Any]]:
    return [f.json() for f in got if f.event == "message"]


async def _customer(admin: httpx.AsyncClient, pool: asyncpg.Pool) -> tuple[str, str]:
    customer = await make_customer(admin)
    return customer["id"], await bearer(pool, Role.CUSTOMER, customer["id"])


async def test_an_order_stream_replays_the_timeline_then_resumes_after_last_event_id(
    api: str, pool: asyncpg.Pool
) -> None:
    async with _client(api, await bearer(pool, Role.ADMIN)) as admin:
        product = await make_product(admin)
        customer_id, token = await _customer(admin, pool)
        order = await place_order(
            admin, customer_id=customer_id, lines=[(product["id"], 1)], payment_token=None
        )
        path = f"/api/v1/orders/{order['id']}/stream"
        async with _client(api, token) as own:
            first = await _read(own, path, until=lambda got: len(got) >= 1)
            assert [e["event"] for e in _entries(first)] == ["order.created"]
            assert first[0].id == str(first[0].json()["id"])
            # The order moves on while nobody listens; a reconnect gets exactly that.
            cancelled = await admin.post(f"/api/v1/orders/{order['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            resumed = await _read(
                own, path, until=lambda got: len(got) >= 1, headers={"Last-Event-ID": first[0].id}
            )
            assert [e["event"] for e in _entries(resumed)] == ["order.cancelled"]
            assert resumed[0].json()["status"] == "cancelled"
            assert int(resumed[0].id or 0) > int(first[0].id or 0)


async def test_a_customer_stream_shows_only_that_customers_orders(
    api: str, pool: asyncpg.Pool
) -> None:
    async with _client(api, await bearer(pool, Role.ADMIN)) as admin:
        product = await make_product(admin)
        mine, my_token = await _customer(admin, pool)
        theirs, their_token = await _customer(admin, pool)
        async with _client(api, my_token) as me, _client(api, their_token) as them:
            # Another customer's order stream is not found, like the order itself.
            other = await place_order(admin, customer_id=theirs, lines=[(product["id"], 1)])
            refused = await me.get(f"/api/v1/orders/{other['id']}/stream")
            assert refused.status_code == 404
            assert refused.headers["content-type"] == "application/problem+json"
            refused = await me.get("/api/v1/orders/stream", params={"customer_id": theirs})
            assert refused.status_code == 403

            ready = await _read(me, "/api/v1/orders/stream", until=lambda got: len(got) >= 1)
            assert ready[0].event == "ready"
            assert ready[0].id is not None
            theirs_orders = [
                await place_order(
                    admin, customer_id=theirs, lines=[(product["id"], 1)], payment_token=None
                )
                for _ in range(3)
            ]
            mine_order = await place_order(
                admin, customer_id=mine, lines=[(product["id"], 1)], payment_token=None
            )
            got = await _read(
                me,
                "/api/v1/orders/stream",
                until=lambda got: any(f.event == "message" for f in got),
                headers={"Last-Event-ID": ready[0].id},
            )
            assert {e["order_id"] for e in _entries(got)} == {mine_order["id"]}
            # ... while the other customer, from the same point, sees only theirs.
            seen = await _read(
                them,
                "/api/v1/orders/stream",
                until=lambda got: len(_entries(got)) >= 3,
                headers={"Last-Event-ID": ready[0].id},
            )
            assert {e["order_id"] for e in _entries(seen)} == {o["id"] for o in theirs_orders}


async def test_streams_are_bounded_per_key_and_end_when_the_key_is_revoked(
    api: str, pool: asyncpg.Pool
) -> None:
    issued = await keys.create_key(pool, role=Role.STAFF, label="test")
    async with _client(api, issued.token) as staff:
        async with (
            staff.stream("GET", "/api/v1/orders/stream") as one,
            staff.stream("GET", "/api/v1/orders/stream") as two,
        ):
            assert one.status_code == two.status_code == 200
            assert (REGISTRY.get_sample_value("orderflow_streams_open") or 0) >= 2
            third = await staff.get("/api/v1/orders/stream")
            assert third.status_code == 429
            assert third.json()["type"].endswith("too-many-streams")
            await keys.revoke_key(pool, ident=issued.row.prefix)
            async with asyncio.timeout(10):
                events = [f.event async for f in frames(one) if not f.comment]
            assert events[-1] == "revoked"  # and then the stream ended
        # Once closed, the streams no longer count (the key is revoked: 401 now).
        assert (await staff.get("/api/v1/orders/stream")).status_code == 401


async def test_a_last_event_id_that_names_no_event_is_a_clear_4xx(
    api: str, pool: asyncpg.Pool
) -> None:
    async with _client(api, await bearer(pool, Role.ADMIN)) as admin:
        for bad in ("abc", "-1", str(2**62)):
            response = await admin.get("/api/v1/orders/stream", headers={"Last-Event-ID": bad})
            assert response.status_code == 422, (bad, response.text)
            assert response.headers["content-type"] == "application/problem+json"


async def test_an_entry_committed_after_a_later_id_is_not_skipped(pool: asyncpg.Pool) -> None:
    """The trap of resuming by id: entry A takes its id, entry B a larger one and commits
    first. A reader that saw B must still get A, once A commits."""
    async with pool.acquire() as conn:
        customer = uuid.uuid4()
        await conn.execute(
            "INSERT INTO customers (id, email, name) VALUES ($1, $2, 'T')",
            customer,
            f"{customer.hex}@example.com",
        )
        order_a, order_b = uuid.uuid4(), uuid.uuid4()
        for order in (order_a, order_b):
            await conn.execute(
                "INSERT INTO orders (id, customer_id, status, currency, subtotal, discount, tax,"
                " total, pricing) VALUES ($1, $2, 'created', 'EUR', 0, 0, 0, 0, 'standard')",
                order,
                customer,
            )
    await _number_all(pool)
    start, _ = await timeline_feed.head(pool)
    insert = (
        "INSERT INTO order_timeline (order_id, event_id, event_type, actor, status_after,"
        " occurred_at) VALUES ($1, $2, 'order.created', 'test', 'created', now()) RETURNING id"
    )
    async with pool.acquire() as slow, pool.acquire() as fast:
        slow_tx = slow.transaction()
        await slow_tx.start()
        id_a = await slow.fetchval(insert, order_a, uuid.uuid4())
        id_b = await fast.fetchval(insert, order_b, uuid.uuid4())  # commits at once
        assert id_a < id_b
        await _number_all(pool)
        position_b = await timeline_feed.position_of(pool, id_b)
        assert position_b is not None
        seen, _ = await timeline_feed.read_after(pool, start, customer_id=customer)
        assert [e.id for e in seen] == [id_b]
        await slow_tx.commit()
    await _number_all(pool)
    position_a = await timeline_feed.position_of(pool, id_a)
    assert position_a is not None
    assert position_a > position_b  # numbered in commit order, not id order
    later, _ = await timeline_feed.read_after(pool, position_b, customer_id=customer)
    assert [e.id for e in later] == [id_a]  # "id > id_b" would have skipped it


async def _number_all(pool: asyncpg.Pool) -> None:
    """Until every committed entry has a position (other API processes of the run number
    entries too: the sequencer may be busy)."""
    async with asyncio.timeout(10):
        while await timeline_feed.sequence(pool) != []:
            await asyncio.sleep(0.01)


async def test_without_redis_streams_still_get_every_entry_from_postgresql(
    app_settings: Callable[..., Settings], database: str, pool: asyncpg.Pool
) -> None:
    """Redis only speeds the fan-out: with nothing listening at its address, the hub's reads
    of PostgreSQL deliver the entries (a little later)."""
    nowhere = app_settings(
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"), stream_poll_interval_s=0.2
    )
    token = await bearer(pool, Role.ADMIN)
    async with (
        serving_api(nowhere) as one,
        serving_api(nowhere) as other,
        _client(one, token) as admin,
        _client(other, token) as watcher,
    ):
        product = await make_product(admin)
        customer = await make_customer(admin)
        order = await place_order(
            admin, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
        )
        path = f"/api/v1/orders/{order['id']}/stream"
        # Orders go through one replica, the stream through the other.
        first = await _read(watcher, path, until=lambda got: len(got) >= 1)
        assert (await admin.post(f"/api/v1/orders/{order['id']}/cancel")).status_code == 200
        later = await _read(
            admin,
            path,
            until=lambda got: len(got) >= 1,
            headers={"Last-Event-ID": first[0].id or ""},
        )
        assert [e["event"] for e in _entries(first + later)] == ["order.created", "order.cancelled"]
