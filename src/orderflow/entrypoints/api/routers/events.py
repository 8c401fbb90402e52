"""The event catalogue: every event type with its JSON schema, generated from the models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orderflow import __version__
from orderflow.domain.asyncapi import document
from orderflow.domain.events import catalogue
from orderflow.entrypoints.api.deps import State

router = APIRouter(prefix="/api/v1/events", tags=["events"])
_CATALOGUE = catalogue()


@router.get("/catalogue", summary="Every event type with its payload JSON schema")
async def event_catalogue() -> list[dict[str, Any]]:
    return _CATALOGUE


@router.get(
    "/asyncapi.json",
    summary="The AsyncAPI 3.0 document of the events (RabbitMQ routing keys and webhooks)",
    description="Generated from the event models: one channel per routing key with the "
    "envelope and payload schemas, and the webhook channel with its Standard Webhooks headers. "
    "Summarised in docs/event-catalogue.md.",
)
async def asyncapi(state: State) -> dict[str, Any]:
    return document(version=__version__, exchange=state.settings.exchange)
