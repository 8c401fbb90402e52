"""The periodic duties a worker runs beside its consumers (each supervised, ``kernel.duties``):
the unpaid-order sweeper, the SLA watch, the reconciler and the webhook deliveries."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import httpx
import structlog

from orderflow.kernel import outbox
from orderflow.notifications import webhooks
from orderflow.observability import metrics
from orderflow.operations.reconcile import reconcile
from orderflow.operations.sla import mark_overdue
from orderflow.operations.watch import every
from orderflow.ordering.expiry import expire_unpaid
from orderflow.settings import Settings

log = structlog.get_logger("orderflow.entrypoints.worker")


async def deliver_webhooks(
    settings: Settings, pool: asyncpg.Pool, http: httpx.AsyncClient, stop: asyncio.Event
) -> None:
    """The webhook duty: deliveries made from the order feed, attempted until accepted, woken
    by every commit of events (docs/webhooks.md). Every worker runs it; the feed cursor and
    the deliveries' leases keep them from doing the same work twice."""
    wake = asyncio.Event()
    policy = webhooks.Policy(
        timeout_s=settings.webhook_timeout_s,
        retry_base_s=settings.webhook_retry_base_s,
        retry_max_s=settings.webhook_retry_max_s,
        disable_after=settings.webhook_disable_after,
    )
    listener = asyncio.create_task(
        outbox.listen_for_commits(
            settings.dsn(), wake.set, stop, max_backoff_s=settings.reconnect_max_backoff_s
        )
    )
    try:
        await webhooks.run_deliveries(
            pool, http, policy, stop, wake=wake, poll_interval_s=settings.webhook_poll_interval_s
        )
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def sweep_unpaid_orders(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Cancel orders left unpaid past their TTL, every few seconds, until ``stop``.

    Every worker sweeps; ``SKIP LOCKED`` keeps them from cancelling the same order twice.
    """

    async def sweep() -> None:
        expired = await expire_unpaid(pool, ttl_s=settings.unpaid_order_ttl_s)
        if expired:
            log.info("unpaid_orders_expired", count=expired)

    await every(settings.expiry_sweep_interval_s, sweep, stop=stop, duty="expiry_sweep")


async def watch_sla(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Mark the orders past their status's SLA deadline and export how many, until ``stop``.

    Every worker watches (the sweep is idempotent); each exports the same figure.
    """
    deadlines = settings.sla_deadlines_s

    async def sweep() -> None:
        counts = await mark_overdue(pool, deadlines=deadlines)
        for status, count in counts.items():
            metrics.ORDERS_OVERDUE.labels(status).set(count)

    await every(settings.sla_watch_interval_s, sweep, stop=stop, duty="sla_watch")


async def reconcile_stuck_orders(
    settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event
) -> None:
    """Re-drive orders that made no progress for longer than their step allows, every
    ``reconcile_interval_s``, until ``stop`` (``operations.reconcile``).

    Every worker reconciles; a re-drive marks the event it sends again, so the others leave
    that order alone until its allowance has passed once more.
    """

    async def sweep() -> None:
        redriven = await reconcile(pool, settings)
        if redriven:
            log.warning("stuck_orders_redriven", count=len(redriven))

    await every(settings.reconcile_interval_s, sweep, stop=stop, duty="reconcile")
