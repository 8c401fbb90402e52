"""/readyz: ready while the database answers; a broker or Redis outage only degrades it.

The broker check is cheap (one kept connection, answer cached)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from orderflow.entrypoints.api.app import create_app
from orderflow.kernel.broker_probe import BrokerProbe
from orderflow.settings import Settings
from tests.integration.conftest import running


async def test_readyz_reports_the_broker_reachable(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["broker"] == "ok"


async def test_broker_probe_reports_an_unreachable_broker_as_down() -> None:
    probe = BrokerProbe("amqp://guest:guest@127.0.0.1:1/", ttl_s=60)
    try:
        assert (await probe.check()).startswith("down")
    finally:
        await probe.close()


async def test_broker_probe_keeps_one_connection_across_checks(settings: Settings) -> None:
    probe = BrokerProbe(settings.rabbitmq_url.get_secret_value(), ttl_s=0)
    try:
        assert await probe.check() == "ok"
        connection = probe._connection
        for _ in range(20):
            assert await probe.check() == "ok"
        assert probe._connection is connection
    finally:
        await probe.close()


async def test_with_the_broker_down_the_api_is_degraded_but_stays_ready(
    app_settings: Callable[..., Settings], client: httpx.AsyncClient
) -> None:
    settings = app_settings(rabbitmq_url=SecretStr("amqp://guest:guest@127.0.0.1:1/"))
    async with running(create_app(settings)) as transport:
        http = httpx.AsyncClient(transport=transport, base_url="http://test")
        ready = await http.get("/readyz")
        listed = await http.get("/api/v1/products")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["broker"].startswith("down")
    assert ready.json()["checks"]["database"] == "ok"
    assert listed.status_code == 200  # still serving
    assert REGISTRY.get_sample_value("orderflow_dependency_up", {"dependency": "broker"}) == 0
    assert REGISTRY.get_sample_value("orderflow_dependency_up", {"dependency": "database"}) == 1


async def test_with_the_database_down_the_api_is_not_ready(
    app_settings: Callable[..., Settings], client: httpx.AsyncClient
) -> None:
    app = create_app(app_settings())
    async with running(app) as transport:
        await app.state.orderflow.pool.close()  # as if PostgreSQL went away under the api
        http = httpx.AsyncClient(transport=transport, base_url="http://test")
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("down")
