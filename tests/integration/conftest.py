from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from orderflow.access import keys
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.api.routers.payment_gateway import PATH as GATEWAY_WEBHOOKS
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.gateway.app import create_app as create_gateway_app
from orderflow.kernel.database import create_pool
from orderflow.kernel.handlers import Registry
from orderflow.kernel.redis import create_redis
from orderflow.settings import Settings
from tests.http_server import serving

ClientFor = Callable[..., Awaitable[httpx.AsyncClient]]


async def bearer(pool: asyncpg.Pool, role: Role | str, customer_id: str | None = None) -> str:
    """A fresh API key for ``role`` (a customer key needs ``customer_id``)."""
    issued = await keys.create_key(
        pool,
        role=Role(role),
        customer_id=uuid.UUID(customer_id) if customer_id else None,
        label="test",
    )
    return issued.token


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncBaseTransport]:
    """The app's lifespan, and a transport that talks to it in-process."""
    async with LifespanManager(app) as manager:
        yield httpx.ASGITransport(app=manager.app)


@pytest.fixture(scope="session")
async def api_transport(
    settings: Settings, database: str
) -> AsyncIterator[httpx.AsyncBaseTransport]:
    async with running(create_app(settings)) as transport:
        yield transport


@pytest.fixture(scope="session", autouse=True)
async def payment_gateway(settings: Settings, database: str) -> AsyncIterator[str]:
    """The payment gateway (``orderflow gateway``'s app) over real HTTP where this run's
    settings point, on this run's database; its webhooks go to an API served over HTTP too."""
    async with serving(create_app(settings), lifespan="on") as api:
        update = {
            "gateway_webhook_url": f"{api}{GATEWAY_WEBHOOKS}",
            "payment_slow_delay_s": 0.05,
        }
        gateway = create_gateway_app(settings.model_copy(update=update))
        port = urlsplit(settings.gateway_url).port
        async with serving(gateway, lifespan="on", port=port) as url:
            yield url


@pytest.fixture(scope="session")
async def product_cache(settings: Settings) -> AsyncIterator[RedisProductCache]:
    """The product cache the test API uses (same Redis key prefix)."""
    link = create_redis(settings)
    yield RedisProductCache(link, ttl_s=settings.product_cache_ttl_s)
    await link.close()


@pytest.fixture(scope="session")
async def client_for(
    api_transport: httpx.AsyncBaseTransport, pool: asyncpg.Pool
) -> AsyncIterator[ClientFor]:
    """``await client_for(role, customer_id=None)``: a client holding a fresh key for ``role``;
    ``await client_for(None)`` sends no key at all."""
    opened: list[httpx.AsyncClient] = []

    async def make(role: Role | str | None, customer_id: str | None = None) -> httpx.AsyncClient:
        headers = {}
        if role is not None:
            headers["Authorization"] = f"Bearer {await bearer(pool, role, customer_id)}"
        http = httpx.AsyncClient(transport=api_transport, base_url="http://test", headers=headers)
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


@pytest.fixture
def app_settings(settings: Settings) -> Callable[..., Settings]:
    """``app_settings(**overrides)``: this run's settings with a Redis prefix of their own."""

    def make(**overrides: object) -> Settings:
        prefix = f"{settings.redis_key_prefix}:{uuid.uuid4().hex[:8]}"
        return settings.model_copy(update={"redis_key_prefix": prefix, **overrides})

    return make


@pytest.fixture(scope="session")
async def client(client_for: ClientFor) -> httpx.AsyncClient:
    """An HTTP client talking to the app in-process, authenticated as an admin."""
    return await client_for(Role.ADMIN)


@pytest.fixture(scope="module")
def registry(settings: Settings, pool: asyncpg.Pool, product_cache: RedisProductCache) -> Registry:
    autopilot = settings.model_copy(
        update={"autopilot": True, "autopilot_delay_s": 0.0, "payment_slow_delay_s": 0.05}
    )
    return build_registry(Deps(settings=autopilot, pool=pool, cache=product_cache))


@pytest.fixture
async def logged(
    settings: Settings, database: str
) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A pool of one connection, and the statements it runs (asyncpg's query logger)."""
    pool = await create_pool(settings, min_size=1, max_size=1)
    seen: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: seen.append(record.query))
    yield pool, seen
    await pool.close()
