"""Request dependencies, declared once and reused by every router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orderflow.access.keys import KeyVerifier
from orderflow.access.ratelimit import RateLimiter
from orderflow.access.sessions import SessionStore
from orderflow.catalogue.price_cache import PriceCache
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.access import Principal, Role
from orderflow.domain.errors import Forbidden, Unauthenticated
from orderflow.domain.pricing import PricingStrategy, make_strategy
from orderflow.kernel.broker_probe import BrokerProbe
from orderflow.kernel.duties import Duties
from orderflow.kernel.redis import RedisLink
from orderflow.ordering.feed_hub import FeedHub
from orderflow.ordering.placement_batches import PlacementBatcher
from orderflow.settings import Settings


@dataclass
class AppState:
    """What the lifespan opens and the routes use."""

    settings: Settings
    pool: asyncpg.Pool
    pricing: PricingStrategy
    # Edge (issue 6)
    redis: RedisLink
    keys: KeyVerifier
    limiter: RateLimiter
    product_cache: RedisProductCache
    price_cache: PriceCache  # order placement only: in memory, then product_cache
    placements: PlacementBatcher | None  # None: each order its own statement
    sessions: SessionStore
    broker: BrokerProbe | None = None  # /readyz's broker check (event backbone)
    feed: FeedHub | None = None  # the order feed behind the live streams (issue 23)
    duties: Duties = field(default_factory=lambda: Duties("api"))  # supervised, for /healthz
    # The back office's health page: (monotonic time, requests, 5xx) as it last looked.
    error_samples: list[tuple[float, float, float]] = field(default_factory=list)
    # The back office's reads and writes of the dead letters take turns
    # (routers/admin_dead_letters).
    dead_letters_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def build_pricing(settings: Settings) -> PricingStrategy:
    """The pricing strategy the settings select."""
    return make_strategy(
        settings.pricing_strategy.value,
        tax_rate_bp=settings.tax_rate_bp,
        threshold=settings.discount_threshold,
        discount_rate_bp=settings.discount_rate_bp,
    )


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain ``def``
# dependency in a worker thread, a hand-off that costs more than the dependency itself.
async def _state(request: Request) -> AppState:
    state: AppState = request.app.state.orderflow
    return state


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.orderflow.pool
    return pool


State = Annotated[AppState, Depends(_state)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]


# --- Authentication and roles (issue 6). The edge middleware has verified the key already
# (it needs the caller for rate limiting); these dependencies only check the role, and the
# HTTPBearer scheme documents the Authorization header in the OpenAPI.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `orderflow keys create`: `Authorization: Bearer ofk_...`",
)


def caller(request: Request) -> Principal | None:
    """The authenticated principal of this request, if any."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal


def _require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = caller(request)
        if principal is None:
            raise Unauthenticated("this endpoint needs an API key: Authorization: Bearer <key>")
        if principal.role not in roles:
            raise Forbidden(f"a {principal.role} key may not do this")
        return principal

    return dependency


Admin = Annotated[Principal, Depends(_require(Role.ADMIN))]
# Warehouse and carrier actions (prepare, ship, deliver); admins may do them too.
Staff = Annotated[Principal, Depends(_require(Role.STAFF, Role.ADMIN))]
# Acting on orders: a customer on their own (pass ``principal.owner``), an admin on any.
OrderActor = Annotated[Principal, Depends(_require(Role.CUSTOMER, Role.ADMIN))]
# Reading orders and customers: everyone with a key; customers see only their own.
Reader = Annotated[Principal, Depends(_require(Role.CUSTOMER, Role.STAFF, Role.ADMIN))]
