"""Request dependencies, declared once and reused by every router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from orderflow.adapters.rabbitmq.probe import BrokerProbe
from orderflow.domain.pricing import PricingStrategy, make_strategy
from orderflow.settings import Settings


@dataclass
class AppState:
    """What the lifespan opens and the routes use."""

    settings: Settings
    pool: asyncpg.Pool
    pricing: PricingStrategy
    broker: BrokerProbe | None = None  # /readyz's broker check (event backbone)


def build_pricing(settings: Settings) -> PricingStrategy:
    """The pricing strategy the settings select."""
    return make_strategy(
        settings.pricing_strategy.value,
        tax_rate_bp=settings.tax_rate_bp,
        threshold=settings.discount_threshold,
        discount_rate_bp=settings.discount_rate_bp,
    )


# Dependencies are coroutines: FastAPI would run plain functions in its thread pool.
async def _state(request: Request) -> AppState:
    state: AppState = request.app.state.orderflow
    return state


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.orderflow.pool
    return pool


State = Annotated[AppState, Depends(_state)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
