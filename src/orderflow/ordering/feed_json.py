"""Feed entries as JSON: as streams and webhooks show them, and as hubs pass them on Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus


def entry_json(entry: FeedEntry) -> dict[str, Any]:
    """An entry as streams and webhooks show it (the timeline's shape, plus its order)."""
    return {
        "id": entry.id,
        "order_id": str(entry.order_id),
        "event": entry.event,
        "event_id": str(entry.event_id),
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "status": entry.status.value,
        "data": entry.data,
    }


def encode_entries(entries: Iterable[FeedEntry]) -> bytes:
    """Entries as one Redis message, with their positions and customers."""
    return orjson.dumps(
        [
            {**entry_json(e), "position": e.position, "customer_id": str(e.customer_id)}
            for e in entries
        ]
    )


def decode_entries(message: bytes) -> list[FeedEntry]:
    """Undo ``encode_entries``."""
    return [
        FeedEntry(
            position=int(item["position"]),
            id=int(item["id"]),
            order_id=uuid.UUID(item["order_id"]),
            customer_id=uuid.UUID(item["customer_id"]),
            event_id=uuid.UUID(item["event_id"]),
            event=item["event"],
            actor=item["actor"],
            status=OrderStatus(item["status"]),
            at=datetime.fromisoformat(item["at"]),
            data=item["data"],
        )
        for item in orjson.loads(message)
    ]
