"""The gateway's HTTP API, shaped like a card provider's: payment intents that are authorized
and later captured or voided, refunds, an idempotency key on every write (``Idempotency-Key``),
a bearer API key, errors as problem+json, and the ledger for audits (``GET /v1/ledger``)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orderflow.gateway import store, webhooks
from orderflow.gateway.service import GatewayError, Provider, Unauthorized
from orderflow.kernel.database import create_pool
from orderflow.kernel.duties import Duties
from orderflow.settings import Settings

log = structlog.get_logger(__name__)
PROBLEM = "application/problem+json"
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


class IntentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=0, le=10**12, description="in minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(
        min_length=1, max_length=100, description="a token: pm_approve, ..."
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_intent: str = Field(min_length=1, max_length=100)


async def _authorized(request: Request, authorization: Annotated[str, Header()] = "") -> None:
    scheme, _, token = authorization.partition(" ")
    expected: str = request.app.state.api_key
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")


async def _provider(request: Request) -> Provider:
    found: Provider = request.app.state.provider
    return found


Auth = Depends(_authorized)
Own = Annotated[Provider, Depends(_provider)]


def _problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:orderflow-gateway:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    """The gateway app; its lifespan opens the store and runs the webhook duties."""
    own = settings.gateway_database_url or settings.database_url
    store_settings = settings.model_copy(update={"database_url": own})
    api_key = settings.gateway_api_key.get_secret_value()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(store_settings, min_size=1, max_size=10, process="gateway")
        await store.create_schema(pool)
        app.state.provider = Provider(
            pool,
            slow_delay_s=settings.payment_slow_delay_s,
            latency_s=settings.payment_latency_ms / 1000,
            failure_rate=settings.payment_failure_rate,
        )
        duties = Duties("gateway")
        app.state.duties = duties
        client = httpx.AsyncClient(timeout=5.0)
        duties.supervise("webhook_delivery", lambda: _deliver(pool, client, settings))
        duties.supervise("idempotency_key_pruner", lambda: _prune(pool, settings))
        try:
            yield
        finally:
            await duties.stop()
            await client.aclose()
            await pool.close()

    app = FastAPI(title="orderflow payment gateway (simulator)", lifespan=lifespan)
    app.state.api_key = api_key

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        extra = {"payment_intent": exc.intent.public()} if exc.intent else {}
        return _problem(exc.status, exc.code, exc.detail, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return _problem(422, "invalid_request", "the request is not valid", errors=errors)

    @app.post("/v1/payment_intents", dependencies=[Auth])
    async def create_intent(body: IntentRequest, key: IdempotencyKey, p: Own) -> dict[str, Any]:
        """Create a payment intent and authorize it; capture it later."""
        intent = await p.authorize(
            key=key,
            amount=body.amount,
            currency=body.currency,
            payment_method=body.payment_method,
            metadata=body.metadata,
        )
        return intent.public()

    @app.get("/v1/payment_intents/{intent_id}", dependencies=[Auth])
    async def get_intent(intent_id: str, p: Own) -> dict[str, Any]:
        return (await p.intent(intent_id)).public()

    @app.post("/v1/payment_intents/{intent_id}/capture", dependencies=[Auth])
    async def capture(intent_id: str, key: IdempotencyKey, p: Own) -> dict[str, Any]:
        return (await p.capture(key=key, intent_id=intent_id)).public()

    @app.post("/v1/payment_intents/{intent_id}/void", dependencies=[Auth])
    async def void(intent_id: str, key: IdempotencyKey, p: Own) -> dict[str, Any]:
        return (await p.void(key=key, intent_id=intent_id)).public()

    @app.post("/v1/refunds", dependencies=[Auth])
    async def refund(body: RefundRequest, key: IdempotencyKey, p: Own) -> dict[str, Any]:
        return await p.refund(key=key, intent_id=body.payment_intent)

    @app.get("/v1/ledger", dependencies=[Auth])
    async def ledger(
        p: Own,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        """Every money movement, oldest first: page with ``after`` (the last ``id`` seen)."""
        return {"entries": await store.ledger(p.pool, after=after, limit=limit)}

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        failing = request.app.state.duties.failing()
        return JSONResponse(
            {"status": "failing" if failing else "ok", "failing": failing},
            status_code=503 if failing else 200,
        )

    return app


async def _deliver(pool: Any, client: httpx.AsyncClient, settings: Settings) -> None:
    secret = settings.gateway_webhook_secret.get_secret_value()
    while True:
        accepted = await webhooks.deliver_due(
            pool, client, url=settings.gateway_webhook_url, secret=secret
        )
        if not accepted:
            await asyncio.sleep(0.1)


async def _prune(pool: Any, settings: Settings) -> None:
    while True:
        forgotten = await store.forget_old_keys(pool, older_than_s=settings.gateway_key_ttl_s)
        if forgotten:
            log.info("gateway_keys_forgotten", count=forgotten)
        await asyncio.sleep(60)
