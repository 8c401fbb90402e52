"""Limits no header can dodge: failed key look-ups are counted per address and per key
prefix, a valid key is never throttled by someone else's failures, forwarded headers count
only from trusted proxies, and a database outage answers 503 with Retry-After, or serves
keys verified shortly before."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from orderflow.access.keys import KeyVerifier
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.api.deps import AppState
from orderflow.kernel.database import create_pool
from orderflow.settings import DEFAULT_RATE_LIMITS, Settings
from tests.conftest import child_env
from tests.e2e.conftest import free_port
from tests.e2e.processes import wait_ready
from tests.integration.conftest import bearer


def _limits(**groups: str) -> dict[str, str]:
    return {**dict.fromkeys(DEFAULT_RATE_LIMITS, "1000/1"), **groups}


def _random_key() -> str:
    return f"ofk_{uuid.uuid4().hex[:12]}_{'A' * 43}"


ClientAt = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def _clients(settings: Settings) -> AsyncIterator[tuple[ClientAt, AppState]]:
    """The app in-process; ``client(address)`` talks to it from that client address."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        opened: list[httpx.AsyncClient] = []

        def client(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=manager.app, client=(address, 40000))
            http = httpx.AsyncClient(transport=transport, base_url="http://test")
            opened.append(http)
            return http

        try:
            yield client, app.state.orderflow
        finally:
            for http in opened:
                await http.aclose()


async def test_a_flood_of_bad_keys_never_throttles_a_valid_key(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.ADMIN)
    valid = {"Authorization": f"Bearer {token}"}
    # A cache TTL far shorter than the flood: the valid key is looked up again meanwhile.
    settings = app_settings(rate_limits=_limits(auth="5/60"), auth_cache_ttl_s=0.05)
    async with _clients(settings) as (client, _):
        shared = client("10.1.1.1")  # e.g. everyone behind one NAT, or the ingress
        assert (await shared.get("/api/v1/orders", headers=valid)).status_code == 200
        flood = [
            (
                await shared.get(
                    "/api/v1/products", headers={"Authorization": f"Bearer {_random_key()}"}
                )
            ).status_code
            for _ in range(30)
        ]
        assert flood.count(429) >= 20
        assert set(flood) <= {401, 429}
        await asyncio.sleep(0.1)  # the valid key's cached row is stale now
        for _ in range(10):
            answer = await shared.get("/api/v1/orders", headers=valid)
            assert answer.status_code == 200, answer.text


async def test_failed_attempts_on_one_key_prefix_are_limited_from_any_address(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.ADMIN)
    prefix, _, secret = token.rpartition("_")
    forged = f"{prefix}_{'B' * len(secret)}"  # the known prefix, a guessed secret
    async with _clients(app_settings(rate_limits=_limits(auth="3/60"))) as (client, _):
        statuses = [
            (
                await client(f"10.2.0.{i}").get(
                    "/api/v1/orders", headers={"Authorization": f"Bearer {forged}"}
                )
            ).status_code
            for i in range(6)  # a new address each time: only the prefix is shared
        ]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429, 429]
        # ... and the real key of that prefix still works.
        real = await client("10.2.0.99").get(
            "/api/v1/orders", headers={"Authorization": f"Bearer {token}"}
        )
        assert real.status_code == 200


async def test_a_key_verified_before_a_database_outage_still_works_for_a_bounded_time(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.STAFF)
    unknown = await bearer(pool, Role.STAFF)  # valid, but never seen by this verifier
    own = await create_pool(settings, min_size=1, max_size=1)
    now = [1000.0]
    verifier = KeyVerifier(own, ttl_s=5, max_entries=10, stale_s=60, clock=lambda: now[0])
    assert await verifier.verify(token) is not None
    await own.close()  # the database is unreachable from here on
    now[0] += 30  # past the TTL: a look-up is due, and fails
    assert await verifier.verify(token) is not None  # served as last read
    with pytest.raises(asyncpg.InterfaceError):
        await verifier.verify(unknown)  # nothing to go on: the caller answers 503
    now[0] += 31  # past the stale bound
    with pytest.raises(asyncpg.InterfaceError):
        await verifier.verify(token)


async def test_an_unverifiable_key_gets_503_with_retry_after(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.ADMIN)
    async with _clients(app_settings()) as (client, state):
        http = client("10.3.0.1")
        await state.pool.close()  # the database is gone (a restart, a failover)
        answer = await http.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["content-type"] == "application/problem+json"


def _api(settings: Settings, port: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "api", "--port", str(port)],
        env=child_env(settings, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _spoofing(base: str) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        return [
            (
                await http.get("/api/v1/products", headers={"X-Forwarded-For": f"198.51.100.{i}"})
            ).status_code
            for i in range(8)
        ]


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
async def test_forwarded_headers_count_only_from_trusted_proxies(
    trusted: str, app_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = app_settings(rate_limits=_limits(read="4/60"))
    server = _api(settings, port, ORDERFLOW_TRUSTED_PROXIES=trusted)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready([f"{base}/healthz"], [server], Path("/dev/null"))
        statuses = await _spoofing(base)
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            plain = await http.get("/api/v1/products")
    finally:
        server.terminate()
        server.wait(timeout=20)
    if trusted:  # behind a trusted proxy, each forwarded client has its own quota
        assert statuses == [200] * 8
    else:  # from anyone else the header is ignored: one client, one quota
        assert statuses == [200] * 4 + [429] * 4
    assert "server" not in plain.headers  # uvicorn does not announce itself
