"""The FastAPI application: routers, error handling, middleware and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from orderflow import __version__
from orderflow.adapters.postgres.database import create_pool
from orderflow.adapters.rabbitmq.probe import BrokerProbe
from orderflow.entrypoints.api import problems
from orderflow.entrypoints.api.deps import AppState, build_pricing
from orderflow.entrypoints.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from orderflow.entrypoints.api.routers import customers, events, health, orders, products
from orderflow.settings import Settings, get_settings

log = structlog.get_logger(__name__)

DESCRIPTION = """
Real-time order processing. Money is an integer of minor units (`1250` = 12.50) beside a
`currency` code. Errors are RFC 9457 `application/problem+json`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; connections open in the lifespan, never at import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        broker = BrokerProbe(
            settings.rabbitmq_url.get_secret_value(), ttl_s=settings.broker_check_ttl_s
        )
        app.state.orderflow = AppState(
            settings=settings, pool=pool, pricing=build_pricing(settings), broker=broker
        )
        log.info("api_started", **settings.safe_summary())
        try:
            yield
        finally:
            await broker.close()
            await pool.close()

    app = FastAPI(
        title="orderflow",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    problems.install(app)
    for router in (products.router, customers.router, orders.router, events.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
