"""The admin dashboard: sessions in Redis, the pages, the snapshot and its live feed."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as redis
import uvicorn
from pydantic import SecretStr

from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.api.routers.admin import COOKIE
from orderflow.entrypoints.api.routers.admin import CSRF_HEADER as CSRF
from orderflow.kernel.topology import Names, declare_topology
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer, running
from tests.integration.test_rate_limit import CLOSED_PORT_REDIS


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real HTTP server of its own, and a cookie-keeping client of it: the
    in-process ASGI transport cannot stream, and the live feed never ends by itself."""
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
            yield http
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def browser(
    app_settings: Callable[..., Settings], database: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """A client of a real server with its own Redis key prefix and queue names."""
    base = app_settings()
    settings = app_settings(admin_refresh_s=0.05, queue_prefix=f"{base.queue_prefix}.admin")
    async with serve(settings) as http:
        yield http, settings


async def _login(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """Log in as the page does: a login CSRF token first (double submit), then the key."""
    token = (await http.get("/admin/api/login-token")).json()["csrf"]
    return await http.post("/admin/login", json={"api_key": key}, headers={CSRF: token})


async def _csrf(http: httpx.AsyncClient) -> dict[str, str]:
    """The session's CSRF header, as the page sends it with every write."""
    return {CSRF: (await http.get("/admin/api/me")).json()["csrf"]}


async def test_without_a_session_the_dashboard_sends_you_to_log_in(
    browser: tuple[httpx.AsyncClient, Settings],
) -> None:
    http, _ = browser
    page = await http.get("/admin")
    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login"
    login = await http.get("/admin/login")
    assert login.status_code == 200
    assert "Admin or staff API key" in login.text
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    for path in ("/admin/api/snapshot", "/admin/stream"):
        refused = await http.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"] == "application/problem+json"


async def test_only_admin_and_staff_keys_open_a_session_and_only_with_the_login_token(
    browser: tuple[httpx.AsyncClient, Settings], pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, _ = browser
    assert (await _login(http, "ofk_not_a_key")).status_code == 401
    customer = await make_customer(client)
    refused = await _login(http, await bearer(pool, Role.CUSTOMER, customer["id"]))
    assert refused.status_code == 403
    assert COOKIE not in http.cookies
    admin = await bearer(pool, Role.ADMIN)
    no_token = await http.post("/admin/login", json={"api_key": admin})
    assert no_token.status_code == 403
    assert "login-token" in no_token.json()["detail"]
    await http.get("/admin/api/login-token")  # a cookie, but a header that does not match it
    forged = await http.post("/admin/login", json={"api_key": admin}, headers={CSRF: "forged"})
    assert forged.status_code == 403
    assert COOKIE not in http.cookies
    assert (await _login(http, await bearer(pool, Role.STAFF))).status_code == 204
    assert (await http.get("/admin/api/me")).json()["may"] == {
        "staff_actions": True,
        "admin_actions": False,
    }
    token = (await http.get("/admin/api/login-token")).json()["csrf"]
    malformed = await http.post(
        "/admin/login", json={"api_key": "x", "extra": 1}, headers={CSRF: token}
    )
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
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        assert await store.exists(f"{settings.redis_key_prefix}:session:{session_id}") == 0
        key = f"{settings.redis_key_prefix}:session:{digest}"  # Redis holds no cookie
        ttl = await store.ttl(key)
        assert 0 < ttl <= settings.admin_session_ttl_s

        product = await make_product(client, price=1500)
        customer = await make_customer(client)
        order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 2)])
        page = await http.get("/admin")
        assert page.status_code == 200
        assert 'id="view"' in page.text
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

        assert (await http.post("/admin/logout")).status_code == 403  # no CSRF token
        assert (await http.post("/admin/logout", headers=await _csrf(http))).status_code == 204
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
