"""The Redis rate limiter: decisions, headers, reset, groups, and failing open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from orderflow.access.ratelimit import RateLimiter
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.kernel.redis import RedisLink, create_redis
from orderflow.settings import DEFAULT_RATE_LIMITS, Settings
from tests.factories import make_customer, make_product
from tests.integration.conftest import bearer, running

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
async def link(app_settings: Callable[..., Settings]) -> AsyncIterator[RedisLink]:
    """A Redis link with this test's own key prefix, closed afterwards."""
    opened = create_redis(app_settings())
    yield opened
    await opened.close()


def limits(**groups: str) -> dict[str, str]:
    return {**dict.fromkeys(DEFAULT_RATE_LIMITS, "1000/1"), **groups}


async def test_gcra_allows_the_quota_then_refuses_until_it_refills(
    link: RedisLink,
) -> None:
    limiter = RateLimiter(link)
    decisions = [
        await limiter.decide(group="t", identity="a", quota=3, window_s=1) for _ in range(4)
    ]
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    assert [d.remaining for d in decisions if d] == [2, 1, 0, 0]
    refused = decisions[3]
    assert refused is not None
    assert 0 < refused.retry_after_s <= 1 / 3 + 0.01
    assert 0.5 < refused.reset_s <= 1.0
    # another identity has its own budget
    other = await limiter.decide(group="t", identity="b", quota=3, window_s=1)
    assert other is not None
    assert other.allowed
    await asyncio.sleep(refused.retry_after_s + 0.02)
    again = await limiter.decide(group="t", identity="a", quota=3, window_s=1)
    assert again is not None
    assert again.allowed
    assert again.remaining == 0
    await asyncio.sleep(1.05)  # a whole window later, the whole quota is back
    full = await limiter.decide(group="t", identity="a", quota=3, window_s=1)
    assert full is not None
    assert full.remaining == 2


async def test_quotas_finer_than_a_microsecond_still_decide(
    link: RedisLink,
) -> None:
    """10 million per second is an emission interval of 0.1 µs: it must not round to zero
    (a zero interval made the script fail, and the API silently fail open)."""
    limiter = RateLimiter(link)
    failed_open = _sample("orderflow_rate_limit_fail_open_total")
    decisions = [
        await limiter.decide(group="t", identity="fast", quota=10_000_000, window_s=1)
        for _ in range(3)
    ]
    assert all(d is not None and d.allowed for d in decisions)
    # each call comes far more than 0.1 µs after the last: the budget has refilled
    assert [d.remaining for d in decisions if d] == [9_999_999] * 3
    assert _sample("orderflow_rate_limit_fail_open_total") == failed_open


async def test_decisions_asked_together_never_exceed_the_quota(
    link: RedisLink,
) -> None:
    """Thirty requests of one caller at the same moment, a quota of ten: exactly ten pass,
    each told a different remaining budget, although they reach Redis in batches of eight."""
    limiter = RateLimiter(link, max_batch=8)
    failed_open = _sample("orderflow_rate_limit_fail_open_total")
    decisions = await asyncio.gather(
        *(limiter.decide(group="t", identity="burst", quota=10, window_s=60) for _ in range(30))
    )
    assert all(d is not None for d in decisions)
    allowed = [d for d in decisions if d is not None and d.allowed]
    assert len(allowed) == 10
    assert sorted(d.remaining for d in allowed) == list(range(10))
    assert _sample("orderflow_rate_limit_fail_open_total") == failed_open


async def test_a_flushed_script_cache_is_reloaded_not_failed_open(
    link: RedisLink,
) -> None:
    """After a Redis restart the script is gone (NOSCRIPT): the limiter loads it again and
    decides, instead of letting the request through unlimited."""
    limiter = RateLimiter(link)
    failed_open = _sample("orderflow_rate_limit_fail_open_total")
    assert await limiter.decide(group="t", identity="flush", quota=2, window_s=60)
    await link.client.script_flush()
    second = await limiter.decide(group="t", identity="flush", quota=2, window_s=60)
    assert second is not None
    assert (second.allowed, second.remaining) == (True, 0)
    third = await limiter.decide(group="t", identity="flush", quota=2, window_s=60)
    assert third is not None
    assert not third.allowed
    assert _sample("orderflow_rate_limit_fail_open_total") == failed_open


async def test_responses_carry_ratelimit_headers_and_429_is_a_problem(
    app_settings: Callable[..., Settings], database: str
) -> None:
    async with running(create_app(app_settings(rate_limits=limits(read="2/60")))) as transport:
        http = httpx.AsyncClient(transport=transport, base_url="http://test")
        first = await http.get("/api/v1/products")
        assert first.status_code == 200
        assert first.headers["ratelimit-policy"] == '"read";q=2;w=60'
        assert first.headers["ratelimit"].startswith('"read";r=1;t=')
        second = await http.get("/api/v1/products")
        assert second.headers["ratelimit"].startswith('"read";r=0;t=')
        refused = await http.get("/api/v1/products")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/rate-limited")
        assert 25 <= int(refused.headers["retry-after"]) <= 30  # one emission interval: 60/2
        assert refused.headers["ratelimit-policy"] == '"read";q=2;w=60'
        # probes are never limited
        assert (await http.get("/healthz")).status_code == 200
        assert "ratelimit" not in (await http.get("/healthz")).headers


async def test_limits_are_per_key_and_per_group(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    settings = app_settings(rate_limits=limits(read="1/60", orders="1/60"))
    async with running(create_app(settings)) as transport:

        def http(token: str | None = None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

        one, two, anonymous = (
            http(await bearer(pool, Role.ADMIN)),
            http(await bearer(pool, Role.ADMIN)),
            http(),
        )
        assert (await one.get("/api/v1/products")).status_code == 200
        assert (await one.get("/api/v1/products")).status_code == 429
        assert (await two.get("/api/v1/products")).status_code == 200  # its own budget
        assert (await anonymous.get("/api/v1/products")).status_code == 200  # per address
        assert (await anonymous.get("/api/v1/products")).status_code == 429
        # the write group is separate from reads
        created = await one.post(
            "/api/v1/customers", json={"email": f"{uuid.uuid4().hex}@x.org", "name": "R"}
        )
        assert created.status_code == 201
        assert created.headers["ratelimit-policy"].startswith('"write";')


async def test_unknown_keys_are_limited_per_address_before_any_lookup(
    app_settings: Callable[..., Settings],
) -> None:
    settings = app_settings(rate_limits=limits(auth="2/60"))
    async with running(create_app(settings)) as transport:
        http = httpx.AsyncClient(transport=transport, base_url="http://test")
        statuses = [
            (
                await http.get(
                    "/api/v1/products",
                    headers={"Authorization": f"Bearer ofk_{uuid.uuid4().hex[:12]}_{'A' * 43}"},
                )
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [401, 401, 429]


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_with_redis_unreachable_the_api_serves_unlimited_and_loses_nothing(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    product = await make_product(client, price=700)
    customer = await make_customer(client)
    settings = app_settings(
        redis_url=SecretStr(CLOSED_PORT_REDIS), rate_limits=limits(orders="1/60")
    )
    token = await bearer(pool, Role.CUSTOMER, customer["id"])
    fail_open_before = _sample("orderflow_rate_limit_fail_open_total")
    async with running(create_app(settings)) as transport:
        http = httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {token}"},
        )
        body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
        placed = [await http.post("/api/v1/orders", json=body) for _ in range(3)]
        assert [r.status_code for r in placed] == [201, 201, 201]  # over the limit: fail open
        assert all("ratelimit" not in r.headers for r in placed)
        # idempotency does not need Redis either
        keyed = [
            await http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": "k-1"})
            for _ in range(2)
        ]
        assert keyed[0].json()["id"] == keyed[1].json()["id"]
        # product reads fall through to PostgreSQL
        read = await http.get(f"/api/v1/products/{product['id']}")
        assert read.status_code == 200
        assert read.json()["price"] == 700
        # degraded, still serving: a Redis outage never takes the api out of its Service
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        checks = ready.json()["checks"]
        assert (checks["database"], checks["redis"]) == ("ok", "down")
        assert REGISTRY.get_sample_value("orderflow_dependency_up", {"dependency": "redis"}) == 0
    ids = {r.json()["id"] for r in placed} | {keyed[0].json()["id"]}
    stored = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
    )
    assert stored == 4
    assert _sample("orderflow_rate_limit_fail_open_total") >= fail_open_before + 1
