"""The payment gateway's webhooks: asynchronous outcomes of authorizations (``pm_slow``),
signed per Standard Webhooks with ``ORDERFLOW_GATEWAY_WEBHOOK_SECRET``. Authenticated by the
signature, not by an API key; a copy of an outcome already recorded changes nothing."""

from __future__ import annotations

import json
import time
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Request, Response, status

from orderflow.domain.errors import InvalidRequest, Unauthenticated
from orderflow.domain.webhooks import GATEWAY_WEBHOOKS_PATH, verify
from orderflow.entrypoints.api.deps import Pool, State
from orderflow.entrypoints.api.problems import ProblemRoute
from orderflow.payments.webhooks import KNOWN, UnknownPayment, settle_from_webhook

log = structlog.get_logger(__name__)
PATH = GATEWAY_WEBHOOKS_PATH
router = APIRouter(tags=["payment gateway"], route_class=ProblemRoute)


@router.post(
    PATH,
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        401: {"description": "missing or bad signature, or a stale timestamp"},
        422: {"description": "not an event about a payment of ours"},
    },
)
async def gateway_webhook(
    request: Request,
    pool: Pool,
    state: State,
    webhook_id: Annotated[str, Header(alias="webhook-id", max_length=200)],
    webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp", max_length=20)],
    webhook_signature: Annotated[str, Header(alias="webhook-signature", max_length=2000)],
) -> Response:
    """Record a payment outcome the gateway reports asynchronously (an authorization or a
    decline). Answered 204 once recorded, or when it was recorded before."""
    body = await request.body()
    secret = state.settings.gateway_webhook_secret.get_secret_value()
    why = verify(secret, webhook_id, webhook_timestamp, webhook_signature, body, now=time.time())
    if why is not None:
        raise Unauthenticated(f"gateway webhook refused: {why}")
    try:
        message = json.loads(body)
        kind, intent = message["type"], message["data"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("a gateway webhook is JSON with type and data") from None
    if kind not in KNOWN or not isinstance(intent, dict):
        log.info("gateway_webhook_ignored", webhook_id=webhook_id, type=kind)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    try:
        moved = await settle_from_webhook(pool, intent)
    except UnknownPayment as exc:
        raise InvalidRequest(str(exc)) from None
    log.info(
        "gateway_webhook",
        webhook_id=webhook_id,
        type=kind,
        intent_id=intent.get("id"),
        order_id=(intent.get("metadata") or {}).get("order_id"),
        settled=moved,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
