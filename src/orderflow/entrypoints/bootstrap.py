"""Wiring: builds the saga's handler registry from the adapters a process opened."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from orderflow.catalogue.products import ProductCache
from orderflow.fulfilment import steps as fulfilment
from orderflow.inventory import reservation as inventory
from orderflow.kernel.handlers import Registry
from orderflow.notifications import steps as notifications
from orderflow.notifications.senders import LogSender, NotificationSender
from orderflow.payments import steps as payments
from orderflow.payments.gateway import PaymentGateway
from orderflow.payments.provider import HttpGateway
from orderflow.settings import Settings


@dataclass
class Deps:
    """What handlers need besides their unit of work; opened by the worker's start-up."""

    settings: Settings
    pool: asyncpg.Pool
    gateway: PaymentGateway | None = None
    sender: NotificationSender = field(default_factory=LogSender)
    cache: ProductCache | None = None  # invalidated when stock moves


def build_registry(deps: Deps) -> Registry:
    """Every saga handler bound to ``deps``; the autopilot's when the settings enable it."""
    settings = deps.settings
    # The gateway's HTTP client opens on first use: a registry built only to list its
    # handlers opens nothing. A process that runs them passes its own (and closes it).
    gateway = deps.gateway or HttpGateway.from_settings(settings)
    specs = [
        *payments.handlers(
            deps.pool,
            gateway,
            timeout_s=settings.payment_timeout_s,
            read_batch_max=settings.worker_batch_max,
        ),
        *inventory.handlers(deps.cache),
        *notifications.handlers(deps.sender, batch_window_s=settings.notifications_batch_window_s),
    ]
    if settings.autopilot:
        specs += fulfilment.autopilot_handlers(delay_s=settings.autopilot_delay_s)
    return Registry(specs)
