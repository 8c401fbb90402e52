"""The admin dashboard: sessions in Redis, the pages, the snapshot and its live feed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as redis
import uvicorn
from pydantic import SecretStr

from orderflow.adapters.rabbitmq.topology import Names, declare_topology
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.api.routers.admin import COOKIE
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer, running
from tests.integration.test_rate_limit import CLOSED_PORT_REDIS


@pytest.fixture
async def browser(
    app_settings: Callable[..., Settings], database: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """A cookie-keeping client on a real HTTP server of its own (its own Redis key prefix):
    the in-process ASGI transport cannot stream, and the live feed never ends by itself."""
    base = app_settings()
    settings = app_settings(admin_refresh_s=0.05, queue_prefix=f"{base.queue_prefix}.admin")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the test server did not start"
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http, settings
    finally:
        server.should_exit = True
        await serving


async def _login(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/admin/login", json={"api_key": key})


async def test_without_a_session_the_dashboard_sends_you_to_log_in(
    browser: tuple[httpx.AsyncClient, Settings],
) -> None:
    http, _ = browser
    page = await http.get("/admin")
    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login"
    login = await http.get("/admin/login")
    assert login.status_code == 200
    assert "Admin API key" in login.text
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    for path in ("/admin/api/snapshot", "/admin/stream"):
        refused = await http.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"] == "application/problem+json"


async def test_only_admin_keys_open_a_session(
    browser: tuple[httpx.AsyncClient, Settings], pool: asyncpg.Pool
) -> None:
    http, _ = browser
    assert (await _login(http, "ofk_not_a_key")).status_code == 401
    staff = await bearer(pool, Role.STAFF)
    refused = await _login(http, staff)
    assert refused.status_code == 403
    assert COOKIE not in http.cookies
    malformed = await http.post("/admin/login", json={"api_key": "x", "extra": 1})
    assert malformed.status_code == 422


async def test_an_admin_session_lives_in_redis_and_ends_at_logout(
    browser: tuple[httpx.AsyncClient, Settings], pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, settings = browser
    admin = await bearer(pool, Role.ADMIN)
    opened = await _login(http, admin)
    assert opened.status_code == 204
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/admin" in cookie
    session_id = http.cookies[COOKIE]
    assert admin not in cookie  # the key itself is never sent back
    store = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        key = f"{settings.redis_key_prefix}:session:{session_id}"
        ttl = await store.ttl(key)
        assert 0 < ttl <= settings.admin_session_ttl_s

        product = await make_product(client, price=1500)
        customer = await make_customer(client)
        order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 2)])
        page = await http.get("/admin")
        assert page.status_code == 200
        assert 'id="recent"' in page.text
        snapshot = (await http.get("/admin/api/snapshot")).json()
        assert order["id"] in [o["id"] for o in snapshot["recent_orders"]]
        assert sum(snapshot["orders_by_status"].values()) >= 1
        assert snapshot["outbox_backlog"] >= 0
        assert snapshot["dead_letters"] is None  # this run's broker topology is not declared

        await _one_dead_letter(settings)
        assert (await http.get("/admin/api/snapshot")).json()["dead_letters"] == 1

        async with http.stream("GET", "/admin/stream") as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
            events = []
            async for line in feed.aiter_lines():
                if line.startswith("data: "):
                    events.append(orjson.loads(line.removeprefix("data: ")))
                if len(events) == 2:
                    break
        assert all("recent_orders" in e for e in events)

        assert (await http.post("/admin/logout")).status_code == 204
        assert await store.exists(key) == 0
        assert (await http.get("/admin/api/snapshot")).status_code == 401
    finally:
        await store.aclose()


async def test_with_redis_unreachable_no_session_opens_and_nothing_breaks(
    app_settings: Callable[..., Settings], database: str, pool: asyncpg.Pool
) -> None:
    settings = app_settings(redis_url=SecretStr(CLOSED_PORT_REDIS), redis_timeout_s=0.2)
    async with (
        running(create_app(settings)) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        admin = await bearer(pool, Role.ADMIN)
        refused = await _login(http, admin)
        assert refused.status_code == 503
        assert refused.json()["type"].endswith("/sessions-unavailable")
        http.cookies.set(COOKIE, "whatever", path="/admin")
        assert (await http.get("/admin")).status_code == 303
        assert (await http.get("/admin/api/snapshot")).status_code == 401


async def _one_dead_letter(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        names = Names.from_settings(settings)
        await declare_topology(channel, names, {}, delivery_limit=settings.delivery_limit)
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), names.dead_letters)
