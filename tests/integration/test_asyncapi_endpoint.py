"""The API serves the AsyncAPI document of its own deployment."""

from __future__ import annotations

import httpx

from orderflow.settings import Settings
from tests.unit.test_asyncapi import _errors


async def test_the_asyncapi_document_is_served_valid_with_the_deployments_exchange(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/api/v1/events/asyncapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert _errors(doc) == []
    binding = doc["channels"]["order.shipped"]["bindings"]["amqp"]
    assert binding["exchange"]["name"] == settings.exchange
