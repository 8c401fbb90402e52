"""/readyz checks the broker too, cheaply (one kept connection, answer cached)."""

from __future__ import annotations

import httpx

from orderflow.adapters.rabbitmq.probe import BrokerProbe
from orderflow.settings import Settings


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
