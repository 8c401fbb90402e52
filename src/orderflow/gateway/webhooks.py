"""The gateway's webhooks to the API: asynchronous outcomes (a ``pm_slow`` authorization)
settle when due and are posted, signed per Standard Webhooks, until the API accepts them.

Rows are claimed with SKIP LOCKED, so several gateways share the work; an intent settles in
the same transaction that claims its webhook, and a failed post is retried with a doubling
delay (capped at a minute), for as long as the API refuses it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import httpx
import structlog

from orderflow.domain import webhooks as signing
from orderflow.gateway import store

log = structlog.get_logger(__name__)
BATCH = 20


async def deliver_due(
    pool: asyncpg.Pool, client: httpx.AsyncClient, *, url: str, secret: str
) -> int:
    """Settle and post the webhooks that are due; how many the API accepted."""
    accepted = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, type, intent_id, attempts FROM gateway.webhooks "
            "WHERE delivered_at IS NULL AND due_at <= now() ORDER BY due_at LIMIT $1 "
            "FOR UPDATE SKIP LOCKED",
            BATCH,
        )
        for row in rows:
            intent = await store.get_intent(conn, row["intent_id"], lock=True)
            assert intent is not None  # a foreign key
            if intent.status == "processing":  # the slow authorization comes through now
                intent = await store.move(
                    conn, intent, status="requires_capture", kind="authorize", key=None
                )
            error = await _post(client, url, secret, row["id"], row["type"], intent.public())
            if error is None:
                accepted += 1
                await conn.execute(
                    "UPDATE gateway.webhooks SET delivered_at = now(), attempts = attempts + 1 "
                    "WHERE id = $1",
                    row["id"],
                )
            else:
                delay = min(60.0, 0.5 * 2 ** row["attempts"])
                await conn.execute(
                    "UPDATE gateway.webhooks SET attempts = attempts + 1, last_error = $2, "
                    "due_at = now() + make_interval(secs => $3) WHERE id = $1",
                    row["id"],
                    error,
                    delay,
                )
                log.warning(
                    "gateway_webhook_failed",
                    webhook_id=row["id"],
                    intent_id=intent.id,
                    attempt=row["attempts"] + 1,
                    error=error,
                    retry_in_s=delay,
                )
    return accepted


async def _post(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    webhook_id: str,
    type_: str,
    intent: dict[str, Any],
) -> str | None:
    """None when the API accepted the webhook (2xx), else why not."""
    body = json.dumps({"id": webhook_id, "type": type_, "data": intent}).encode()
    headers = {
        "content-type": "application/json",
        **signing.headers([secret], webhook_id, int(time.time()), body),
    }
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    return f"HTTP {response.status_code}"
