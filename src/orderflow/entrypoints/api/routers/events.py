"""The event catalogue: every event type with its JSON schema, generated from the models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orderflow.domain.events import catalogue

router = APIRouter(prefix="/api/v1/events", tags=["events"])
_CATALOGUE = catalogue()


@router.get("/catalogue", summary="Every event type with its payload JSON schema")
async def event_catalogue() -> list[dict[str, Any]]:
    return _CATALOGUE
