"""The FastAPI application: routers, error handling, middleware and the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from orderflow import __version__
from orderflow.access.keys import KeyVerifier
from orderflow.access.ratelimit import RateLimiter
from orderflow.access.sessions import SessionStore
from orderflow.catalogue.price_cache import PriceCache
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.entrypoints.api import idempotency, problems
from orderflow.entrypoints.api.deps import AppState, build_pricing
from orderflow.entrypoints.api.edge import EdgeMiddleware
from orderflow.entrypoints.api.middleware import (
    BodyLimitMiddleware,
    RequestObservationMiddleware,
    SecurityHeadersMiddleware,
    UnhandledErrorMiddleware,
)
from orderflow.entrypoints.api.routers import (
    admin,
    admin_dead_letters,
    admin_ops,
    admin_orders,
    customers,
    docs,
    events,
    health,
    orders,
    payment_gateway,
    products,
    streams,
    webhooks,
)
from orderflow.entrypoints.api.tracing import TracingMiddleware
from orderflow.kernel import idempotency as idempotency_records
from orderflow.kernel.broker_probe import BrokerProbe
from orderflow.kernel.database import create_pool
from orderflow.kernel.failures import is_transient
from orderflow.kernel.process import settle_heap
from orderflow.kernel.redis import create_redis
from orderflow.observability.metrics import PRODUCT_CACHE, RATE_LIMIT_DECISIONS, start_at_zero
from orderflow.ordering.feed_hub import FeedHub
from orderflow.ordering.placement_batches import PlacementBatcher
from orderflow.settings import Settings, get_settings

log = structlog.get_logger(__name__)

DESCRIPTION = """
Real-time order processing. Money is an integer of minor units (`1250` = 12.50) beside a
`currency` code. Errors are RFC 9457 `application/problem+json`.

Authenticate with `Authorization: Bearer <key>` (keys come from `orderflow keys create`).
Catalogue reads, `/healthz`, `/readyz` and `/metrics` are public; every response carries the
`RateLimit-Policy` and `RateLimit` headers; `POST /orders` and `/cancel` accept an
`Idempotency-Key`. See docs/security.md.
"""


async def _prune_idempotency_keys(state: AppState) -> None:
    """Housekeeping: delete expired idempotency records now and then (any replica may)."""
    while True:
        await asyncio.sleep(state.settings.idempotency_prune_interval_s)
        try:
            await idempotency_records.prune(state.pool)
        except Exception as exc:  # best effort: expired records are ignored anyway
            if not is_transient(exc):
                raise  # a bug: the duty's supervisor logs it and starts the duty again
            log.warning("idempotency_prune_failed", error=repr(exc))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; connections open in the lifespan, never at import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Counters with a known set of labels start at 0 (the first deny is an increase).
        start_at_zero(RATE_LIMIT_DECISIONS, settings.rate_limits, ("allow", "deny"))
        start_at_zero(PRODUCT_CACHE, ("hit", "miss", "error", "local"))
        pool = await create_pool(settings, process="api")
        broker = BrokerProbe(
            settings.rabbitmq_url.get_secret_value(), ttl_s=settings.broker_check_ttl_s
        )
        redis = create_redis(settings)  # connects lazily: a Redis outage never blocks start-up
        product_cache = RedisProductCache(redis, ttl_s=settings.product_cache_ttl_s)
        state = AppState(
            settings=settings,
            pool=pool,
            pricing=build_pricing(settings),
            redis=redis,
            keys=KeyVerifier(
                pool,
                ttl_s=settings.auth_cache_ttl_s,
                max_entries=settings.auth_cache_size,
                stale_s=settings.auth_stale_s,
            ),
            limiter=RateLimiter(redis),
            product_cache=product_cache,
            price_cache=PriceCache(product_cache, ttl_s=settings.price_cache_ttl_s),
            placements=(
                PlacementBatcher(pool, max_batch=settings.placement_batch_max)
                if settings.placement_batch_max > 1
                else None
            ),
            sessions=SessionStore(
                redis,
                idle_s=settings.admin_session_ttl_s,
                lifetime_s=settings.admin_session_lifetime_s,
            ),
            broker=broker,
            feed=FeedHub(
                pool,
                settings.dsn(),
                redis,
                settings.redis_url.get_secret_value(),
                poll_interval_s=settings.stream_poll_interval_s,
                window_size=settings.stream_window,
                max_backoff_s=settings.reconnect_max_backoff_s,
            ),
        )
        app.state.orderflow = state
        assert state.feed is not None
        await state.feed.start(state.duties)
        state.duties.supervise("idempotency_pruner", lambda: _prune_idempotency_keys(state))
        settle_heap()
        log.info("api_started", **settings.safe_summary())
        try:
            yield
        finally:
            state.feed.close()
            await broker.close()
            await state.duties.stop()
            await redis.close()
            await pool.close()

    app = FastAPI(
        title="orderflow",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local files by routers/docs.py
        redoc_url=None,
    )
    problems.install(app)
    idempotency.install(app)
    for router in (
        products.router,
        customers.router,
        streams.router,  # before orders: /orders/stream is not an order id
        orders.router,
        events.router,
        health.router,
        admin.router,
        admin_orders.router,
        admin_dead_letters.router,
        admin_ops.router,
        docs.router,
        webhooks.router,
        payment_gateway.router,
    ):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(EdgeMiddleware)  # outside the body limit: refuse before reading bodies
    app.add_middleware(UnhandledErrorMiddleware)  # inside the metrics: a 500 is counted
    app.add_middleware(SecurityHeadersMiddleware)  # on every answer, errors and 429s included
    app.add_middleware(RequestObservationMiddleware)  # sees every answer
    app.add_middleware(TracingMiddleware)  # outermost: the request's span holds all of it
    return app
